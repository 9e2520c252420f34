"""What the user can fix, said in one line: UserError, the argument parser of every tool, and
the wrapper that turns a tool's errors into one line and an exit status. Imports nothing heavy
(sweep.py uses it without torch)."""
import argparse
import signal
import sys

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix (bad flag, missing data, wrong checkpoint...): one line on
    stderr and exit status `status` (2 unless a tool says otherwise)."""

    def __init__(self, message, status=EXIT_USER_ERROR):
        super().__init__(message)
        self.status = status


def one_line_errors(prog, work):
    """work() -> its exit status; a UserError raised by it -> 'PROG: error: MESSAGE' on stderr
    (one line) and its status; Ctrl-C -> one line and 130. The training scripts add their own
    cases on top (utils/stops.py)."""
    try:
        return work()
    except UserError as e:
        print(f'{prog}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f'{prog}: interrupted (Ctrl-C)', file=sys.stderr)
        return 128 + signal.SIGINT


class Parser(argparse.ArgumentParser):
    # {dataset: {dest: default}}: defaults a dataset changes (utils/cli.parse_flags); the
    # network flags add theirs (methods/networks.py: ImageNet's -a)
    dataset_defaults = {}

    def error(self, message):
        """One line on stderr and exit status 2, instead of the usage block."""
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')

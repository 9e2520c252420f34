"""What the user can fix, said in one line: UserError, and the argument parser of every tool.
Imports nothing heavy (sweep.py uses it without torch)."""
import argparse


class UserError(Exception):
    """A problem the user can fix (bad flag, missing data, wrong checkpoint...).

    The entry scripts print its message as one line on stderr and exit with status 2.
    """


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit status 2, instead of the usage block."""
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')

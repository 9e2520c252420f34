"""Ctrl-C while an entry script imports torch, and SIGTERM outside the engine's handling.

A KeyboardInterrupt raised in the middle of a library's import can be swallowed by a bare
`except:` (the run then goes on as if nothing happened) or leave a half-imported module that
fails later with an unrelated error (numpy: RecursionError). So while the imports run, SIGINT
ends the process at once with one line; afterwards the usual KeyboardInterrupt is back, and
engine.main turns it into one line too.

SIGTERM's default action kills the process silently (exit -15). From the imports on, it ends
the process with one line (none under torchrun, which reports it) and status 143 instead;
engine.main handles it itself while it runs (the training loop saves and stops), and hands it
back here once the run has ended (after "Done.", while the interpreter shuts down). Imports
nothing heavy. An entry script wraps its imports (torch, the engine, its method) in

    with interrupt_exits_while_importing(__name__ == '__main__'):
        ...
"""
import os
import signal
import sys
from contextlib import contextmanager

EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


def _name():
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'


def _exit_now(signum, frame):
    os.write(2, f'{_name()}: interrupted (Ctrl-C) while starting; nothing was written\n'.encode())
    os._exit(EXIT_INTERRUPTED)


def _terminated(signum, frame):
    try:  # what was printed before the signal still reaches a pipe or file
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 (a handler may interrupt a write to stdout itself)
        pass
    # Under torchrun a SIGTERM outside the engine is torchrun stopping the group after a rank
    # failed: the engine has printed the run's one line, and torchrun's summary names the rest.
    if os.environ.get('WORLD_SIZE', '1') == '1':
        os.write(2, f'{_name()}: stopped by SIGTERM outside training; files already saved are '
                    'untouched\n'.encode())
    os._exit(EXIT_TERMINATED)


@contextmanager
def interrupt_exits_while_importing(enabled=True):
    """Within the block, SIGINT exits with status 130 and one line; from the block on, SIGTERM
    exits with status 143 and one line (when `enabled`, i.e. run as a script, and the signal
    is not ignored, as SIGINT is for a background job)."""
    if enabled and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _terminated)
    previous = signal.getsignal(signal.SIGINT)
    if not enabled or previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""Ctrl-C while an entry script imports torch (seconds, before anything is written).

A KeyboardInterrupt raised in the middle of a library's import can be swallowed by a bare
`except:` (the run then goes on as if nothing happened) or leave a half-imported module that
fails later with an unrelated error (numpy: RecursionError). So while the imports run, SIGINT
ends the process at once with one line; afterwards the usual KeyboardInterrupt is back, and
engine.main turns it into one line too. Imports nothing heavy.

    with interrupt_exits_while_importing(__name__ == '__main__'):
        from methods import METHODS
        from utils import engine
"""
import os
import signal
import sys
from contextlib import contextmanager

EXIT_INTERRUPTED = 128 + signal.SIGINT


def _exit_now(signum, frame):
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'python'
    os.write(2, f'{name}: interrupted (Ctrl-C) while starting; nothing was written\n'.encode())
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interrupt_exits_while_importing(enabled=True):
    """Within the block, SIGINT exits with status 130 and one line (when `enabled`, i.e. run
    as a script, and SIGINT is not ignored, as for a background job)."""
    previous = signal.getsignal(signal.SIGINT)
    if not enabled or previous is signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, _exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

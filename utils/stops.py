"""How a run stops: signals turned into flags, and every anticipated failure turned into one
line and an exit code (one line for the whole run under torchrun too: utils/distributed.py
says which rank prints)."""
import os
import signal
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import torch

from .distributed import (destroy_process_group, is_collective_failure,
                          report_collective_failure, report_failure)
from .errors import UserError

EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step has been written."""


class Diverged(Exception):
    """The loss became NaN or Inf: of every run, or of a pack's runs of `seeds`."""

    def __init__(self, message, seeds=None):
        super().__init__(message)
        self.seeds = seeds


class Terminated(BaseException):  # like KeyboardInterrupt: no `except Exception` swallows it
    """SIGTERM outside the training loop (which saves and stops at a batch boundary)."""


def _terminate(signum, frame):
    # Not while an error is being handled: when one rank fails, torchrun sends SIGTERM to the
    # others, and the handling must get to print its line rather than die silently.
    if sys.exc_info()[1] is None:
        raise Terminated(signum)


def run_to_exit_code(work, world, prog):
    """work() -> its return value, or the exit code of the failure it raised, printed as one
    line (the process group is taken down either way)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return work()
    except UserError as e:
        return report_failure(world, f'{prog}: error: {e}', EXIT_USER_ERROR)
    except Diverged as e:
        return report_failure(world, f'{prog}: stopped: {e}', EXIT_DIVERGED)
    except Preempted as e:
        return report_failure(world, f'{prog}: {e.args[0]}', 128 + e.args[1])
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and stops)
        return report_failure(world, f'{prog}: interrupted (Ctrl-C); files already saved are '
                              'untouched', 128 + signal.SIGINT)
    except Terminated:
        return report_failure(world, f'{prog}: stopped by SIGTERM outside the training loop; '
                              'files already saved are untouched', 128 + signal.SIGTERM)
    except Exception as e:
        if not is_collective_failure(e):
            raise
        return report_collective_failure(world, prog)
    finally:
        signal.signal(signal.SIGTERM, previous)
        destroy_process_group()


@contextmanager
def quiet_unless(condition):
    """Silence stdout and stderr inside the block unless `condition`."""
    if condition:
        yield
        return
    with open(os.devnull, 'w') as null, redirect_stdout(null), redirect_stderr(null):
        yield


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loops check between batches."""

    def __init__(self, device):
        self.signum, self.device = 0, device

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def requested(self, world):
        """Whether any rank got a signal (every rank must call this at the same point)."""
        if not world.distributed:
            return self.signum
        flag = torch.tensor(self.signum, device=self.device)
        return int(world.all_reduce(flag, torch.distributed.ReduceOp.MAX).item())

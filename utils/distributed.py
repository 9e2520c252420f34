"""torch.distributed under torchrun: rank bookkeeping, the few collectives we need, and how a
failure on any rank becomes one line from rank 0.

Failures under torchrun, and who prints what:

- An anticipated failure (a UserError, a divergence, a preemption) is printed by rank 0 only.
  Most happen on every rank at once (the flags are the same everywhere; data errors are
  agreed by `in_turn`; divergence and preemption by an all_reduce). One that happens on
  another rank alone (a checkpoint its node cannot read) is handed to rank 0 through the
  rendezvous store: that rank closes its connections, so rank 0 stops at its next collective,
  prints the line with the rank's number, exits with that rank's status and acknowledges.
  Without an acknowledgement within REPORT_WAIT_S (rank 0 busy, or NCCL, which may not
  notice closed peers) the rank prints its own line instead. Either way: one line and a
  non-zero exit on every rank.
- Before the process group exists (a bad flag, a refusal while setting up) every rank meets
  the same failure, but not at the same moment: a rank that gets there before rank 0 waits
  (`wait_for_rank_0`) rather than exiting, since its exit makes torchrun stop rank 0 before
  rank 0 has printed anything.
- A collective that breaks because another rank left (it failed, was killed, lost its node)
  is not an error of this rank: rank 0 prints one line saying so, the others print nothing.
  The rank that left printed its own traceback if it had one; torchrun's summary names it.
"""
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch.distributed as dist

from .errors import UserError

REPORT_WAIT_S = 30  # how long a failing rank waits for rank 0 to print its line


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM):
        if self.distributed:
            dist.all_reduce(tensor, op=op)
        return tensor

    def broadcast_buffers(self, model):
        """Rank 0's BatchNorm running statistics everywhere (before evaluating or saving)."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def in_turn(self, work):
        """work() on global rank 0 first, then on the first rank of every other node, then on
        the remaining ranks; returns its result on every rank.

        For work that writes into a folder before reading it (preparing or downloading a
        dataset): with a shared folder rank 0 prepares it and everyone else only reads; with
        a node-local folder each node's first rank prepares its own copy. A UserError in any
        turn is raised on every rank, with the message of the lowest failing rank, before
        any rank starts the next turn.
        """
        result = None
        turns = (self.rank == 0, self.local_rank == 0 and self.rank != 0, self.local_rank != 0)
        for mine in turns if self.distributed else (True,):
            if mine:
                result = self._all_or_none(work)
            else:
                self._all_or_none(None)   # waits for this turn's ranks
        return result

    def together(self, work):
        """work() on every rank at once; a UserError on any rank is raised on every rank (the
        lowest failing rank's message) before any rank goes on, so that no rank leaves while
        another still connects or waits (ImageNet's folders, which each rank scans itself)."""
        return self._all_or_none(work)

    def _all_or_none(self, work):
        """work() on the ranks that give one (None: this rank only waits), then a UserError
        raised on every rank if any of them failed; else work's result (None where none)."""
        result, error = None, None
        if work is not None:
            try:
                result = work()
            except UserError as e:
                error = str(e)
        self._raise_if_any_failed(error)
        return result

    def _raise_if_any_failed(self, error):
        errors = [error]
        if self.distributed:
            errors = [None] * self.size
            dist.all_gather_object(errors, error)
        for rank, message in enumerate(errors):
            if message is not None:
                raise UserError(message if rank == 0 else f'{message} (rank {rank})')


def world_from_env():
    """The torchrun world this process belongs to (a single process without torchrun)."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return World()
    return World(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']),
                 int(os.environ.get('LOCAL_RANK', 0)))


def _shares_agent_store():
    """Whether torchrun hands its workers the store it keeps across restarts. PyTorch then
    lets restarted workers read the previous attempt's connection keys, so they fail to
    connect or hang (https://github.com/pytorch/pytorch/issues/135712, still so in 2.14)."""
    return os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'


def init_process_group(world, device):
    if not world.distributed or dist.is_initialized():
        return
    restarts = int(os.environ.get('TORCHELASTIC_MAX_RESTARTS', 0))
    if world.is_main and restarts and _shares_agent_store():
        print('warning: restarts under torchrun --max-restarts need TORCH_DISABLE_SHARE_RDZV_'
              'TCP_STORE=1 in its environment; without it PyTorch may fail to reconnect the '
              'restarted workers (pytorch/pytorch#135712)', file=sys.stderr)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    try:
        dist.init_process_group(backend, device_id=device if device.type == 'cuda' else None)
    except RuntimeError as e:
        attempt = int(os.environ.get('TORCHELASTIC_RESTART_COUNT', 0))
        if attempt and _shares_agent_store():
            raise UserError(f'torchrun restart {attempt}: the ranks could not connect again '
                            f'({str(e).splitlines()[0][:200]}); launch torchrun with '
                            'TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (pytorch/pytorch#135712)'
                            ) from None
        raise


def destroy_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- failures

def _keys():
    """Store keys of this attempt (a torchrun restart must not read the last one's)."""
    prefix = f'one/attempt{os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)}'
    return f'{prefix}/failure', f'{prefix}/reported'


def _store():
    return dist.distributed_c10d._get_default_store()


def report_failure(world, line, code):
    """End an anticipated failure on this rank: exactly one line for the whole run (see the
    module's docstring). Returns the exit code."""
    if world.is_main:
        print(line, file=sys.stderr)
        _acknowledge()
        return code
    if not dist.is_initialized():
        wait_for_rank_0()
        print(f'{line} (rank {world.rank})', file=sys.stderr)
        return code
    failure, reported = _keys()
    try:
        store = _store()
        store.compare_set(failure, '', f'{code} {line} (rank {world.rank})')
        dist.destroy_process_group()  # a rank 0 waiting in a collective for us stops now
        deadline = time.monotonic() + REPORT_WAIT_S
        while not store.check([reported]):
            if time.monotonic() > deadline:
                print(f'{line} (rank {world.rank})', file=sys.stderr)
                break
            time.sleep(0.05)
    except Exception:  # the store went with rank 0 (a store rank 0 hosts): it has printed
        pass
    return code


def wait_for_rank_0():
    """On a rank other than 0 that failed before the process group exists: give rank 0, which
    fails the same way, time to print its line. Rank 0's exit makes torchrun send SIGTERM,
    which ends this process silently; returns only if that has not come within REPORT_WAIT_S
    (then this failure is this rank's own, and the caller reports it)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(128 + signum))
    time.sleep(REPORT_WAIT_S)


def is_collective_failure(error):
    """Whether `error` is a collective (or DDP's) that broke because a peer went away."""
    return dist.is_initialized() and isinstance(error, RuntimeError) and (
        isinstance(error, dist.DistError) or 'gloo' in str(error) or 'NCCL' in str(error))


def report_collective_failure(world, prog):
    """Another rank left: rank 0 prints its reported line, or says a rank left; the other
    ranks print nothing. Returns the exit code."""
    if not world.is_main:
        return 1
    line, code = (f'{prog}: stopped: another rank failed or was killed (torchrun\'s summary '
                  'names it)'), 1
    try:
        store = _store()
        failure, _ = _keys()
        if store.check([failure]):
            code, line = store.get(failure).decode().split(' ', 1)
    except Exception:
        pass
    print(line, file=sys.stderr)
    _acknowledge()
    return int(code)


def _acknowledge():
    """Tell a failing rank that waits (report_failure) that rank 0 has printed a line."""
    try:
        if dist.is_initialized():
            _store().set(_keys()[1], '1')
    except Exception:
        pass

"""One writer per run folder: an exclusive lock on FOLDER/.lock while a run trains there.

    with hold_run_lock(folder):      # rank 0, before any file of the run is written
        ...train...

    lock_holder(folder)              # None, or {'host', 'pid', 'started'} of the live holder

The lock is `flock(LOCK_EX | LOCK_NB)` on FOLDER/.lock, taken through filelock's
UnixFileLock. The kernel drops an flock when the last descriptor of its open file goes away,
so a holder that dies by any means (SIGKILL, OOM killer, segfault) releases it at once: there
is never a stale lock to clean up. The lock file itself stays on release (waiters must share
its inode); its presence means nothing. Who holds the lock is written to FOLDER/.lock.holder
(json {host, pid, started}) after the lock is taken. That file is only read while the lock is
held; a holder file without a held lock is history and is ignored.

The descriptor is opened close-on-exec, so a process started by the holder (subprocess, exec)
does not inherit the lock; a child made by a bare fork() (multiprocessing 'fork') does share
it and keeps it held until it exits too.

What is and is not guaranteed, by filesystem:

- Local filesystems (ext4, xfs, btrfs, tmpfs, overlayfs): exact, between all processes of
  the machine.
- NFSv4: Linux clients emulate flock with a whole-file POSIX byte-range lock, which the
  server arbitrates, so the lock holds across nodes when the server supports locking (the
  default). If a client loses its lease (network partition longer than the lease, typically
  90 s) the server may give the lock to another node while the first still runs; NFS cannot
  prevent that.
- NFSv3: the same emulation, arbitrated by lockd/statd (NLM); with `nolock` mounts, or
  without lockd on the server, the lock is local to one node or fails with ENOLCK.
- Lustre mounted without `-o flock` (`localflock` gives node-local locks only), GPFS, BeeGFS
  and some FUSE filesystems (sshfs, many object-store mounts): flock may be node-local or
  unsupported. Node-local locks still stop two runs on the same node, not on two nodes.

When the filesystem refuses the lock outright (ENOLCK, EOPNOTSUPP, ENOSYS, ...), the run is
refused with one line that says so: it does not silently run unlocked. If you know nothing
else writes to that folder, set the environment variable ONE_RUN_LOCK=off to run without the
lock (a warning line is printed); or choose a run folder on a local or lock-capable
filesystem. lock_holder() on such a filesystem answers None (nothing known to hold it).
"""
import errno
import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from datetime import datetime

from filelock import Timeout, UnixFileLock

from .atomic import write_json_atomic
from .errors import UserError

LOCK_NAME, HOLDER_NAME = '.lock', '.lock.holder'
DISABLE_ENV = 'ONE_RUN_LOCK'          # =off: run without the lock (filesystems without flock)
# A status probe (lock_holder) holds a shared lock for microseconds; retrying this long
# before refusing keeps a probe from being mistaken for a run.
CONTENTION_WAIT_S = 1.0


def _describe(folder, holder):
    if not holder:
        return f'run folder {folder!r} is in use by another process (holder not recorded yet)'
    since = f' (started {holder["started"]})' if holder.get('started') else ''
    return (f'run folder {folder!r} is in use by pid {holder.get("pid")} on host '
            f'{holder.get("host")}{since}')


def _read_holder(folder):
    try:
        with open(os.path.join(folder, HOLDER_NAME)) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_holder(folder):
    holder = {'host': socket.gethostname(), 'pid': os.getpid(),
              'started': datetime.now().astimezone().isoformat(timespec='seconds')}
    write_json_atomic(os.path.join(folder, HOLDER_NAME), holder)
    return holder


@contextmanager
def hold_run_lock(folder):
    """Hold FOLDER/.lock (creating FOLDER) for the duration of the block, or raise UserError.

    Yields the holder record written to FOLDER/.lock.holder.
    """
    if os.environ.get(DISABLE_ENV, '').lower() in ('off', '0', 'no', 'false'):
        print(f'warning: {DISABLE_ENV}=off: {folder!r} is not locked; nothing stops a second '
              'run from writing to it', file=sys.stderr)
        yield None
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot create run folder {folder!r}: {e.strerror or e}') from None
    lock = UnixFileLock(os.path.join(folder, LOCK_NAME), thread_local=False,
                        preserve_lock_file=True, fallback_to_soft=False)
    try:
        lock.acquire(timeout=CONTENTION_WAIT_S, poll_interval=0.05)
    except Timeout:
        raise UserError(f'{_describe(folder, _read_holder(folder))}; wait for it to finish or '
                        'stop it') from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f'cannot create the lock file in run folder {folder!r}: '
                            f'{e.strerror or e}') from None
        raise UserError(f'cannot lock run folder {folder!r}: {e.strerror or e} (this '
                        'filesystem does not support flock, e.g. NFSv3 without lockd, Lustre '
                        'without -o flock); use a folder on a filesystem that does, or, if '
                        f'nothing else writes there, set {DISABLE_ENV}=off') from None
    try:
        holder = _write_holder(folder)
        yield holder
    finally:
        lock.release()


def lock_holder(folder):
    """{'host', 'pid', 'started'} of the process holding FOLDER's run lock, or None.

    Creates nothing. The record is the holder file's; if the holder has just taken the lock
    and not written it yet, host and pid are None. Answers None on a filesystem where the
    lock cannot be probed.
    """
    try:
        fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None                      # no folder or no lock file: never locked
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        holder = {'host': None, 'pid': None, 'started': None}
        holder.update(_read_holder(folder))
        return holder
    finally:
        os.close(fd)                     # closing drops the probe's shared lock, if taken
    return None

"""The run-folder lock between real processes: refusal naming the holder, no stale lock."""
import errno
import fcntl
import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from utils.errors import UserError
from utils.runlock import HOLDER_NAME, hold_run_lock, lock_holder

HOLD = """import sys, time
from utils.runlock import hold_run_lock
with hold_run_lock(sys.argv[1]):
    print('locked', flush=True)
    time.sleep(120)
"""
TAKE = """import sys
from utils.errors import UserError
from utils.runlock import hold_run_lock
try:
    with hold_run_lock(sys.argv[1]):
        print('took it')
except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
"""


def python(code, *args):
    return [sys.executable, '-c', code, *map(str, args)]


@pytest.fixture
def holder(tmp_path):
    """A live process holding tmp_path/run's lock."""
    folder = tmp_path / 'run'
    proc = subprocess.Popen(python(HOLD, folder), cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'locked'
    yield folder, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def take(folder):
    return subprocess.run(python(TAKE, folder), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_second_process_refused_naming_the_holder(holder):
    folder, proc = holder
    second = take(folder)
    assert second.returncode == 2 and 'took it' not in second.stdout
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"run folder '{folder}' is in use by pid {proc.pid} on host " \
           f'{socket.gethostname()}' in lines[0]
    assert 'wait for it' in lines[0]
    found = lock_holder(str(folder))
    assert found['pid'] == proc.pid and found['host'] == socket.gethostname()


def test_sigkilled_holder_leaves_no_stale_lock(holder):
    folder, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (folder / HOLDER_NAME).exists()       # history only: it means nothing now
    assert lock_holder(str(folder)) is None
    again = take(folder)
    assert again.returncode == 0 and again.stdout.strip() == 'took it', again.stderr


def test_in_process_use_and_probe(tmp_path):
    missing = tmp_path / 'not' / 'there'
    assert lock_holder(str(missing)) is None and not missing.exists()
    folder = str(tmp_path / 'new' / 'run')
    with hold_run_lock(folder) as record:          # creates the folder
        assert record['pid'] == os.getpid()
        assert lock_holder(folder)['pid'] == os.getpid()
        with pytest.raises(UserError, match=f'in use by pid {os.getpid()}'):
            with hold_run_lock(folder):
                pass
    assert lock_holder(folder) is None
    with hold_run_lock(folder):                     # released: can be taken again
        pass


def test_filesystem_without_locks_refuses_unless_disabled(tmp_path, monkeypatch, capsys):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(fcntl, 'flock', no_locks)
    folder = str(tmp_path / 'run')
    with pytest.raises(UserError, match='No locks available.*ONE_RUN_LOCK=off'):
        with hold_run_lock(folder):
            pass
    monkeypatch.setenv('ONE_RUN_LOCK', 'off')
    with hold_run_lock(folder) as record:
        assert record is None
    assert 'not locked' in capsys.readouterr().err

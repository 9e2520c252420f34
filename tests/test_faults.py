"""Faults and misuse that must never cost a run: continuing versus forking a run, full disks,
interrupted overwrites, a changed batch size mid-epoch, SIGTERM during evaluation, two writers."""
import errno
import hashlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import cifar_one
from conftest import ROOT, assert_same_run, load, run_script, tiny
from fakedata import not_checkpoints, write_fashion_mnist
from utils import checkpoint, engine
from utils.checkpoint import load_checkpoint, save_atomic
from utils.errors import UserError

SMALL = ['--train-subset', 128]  # two batches of 64 per epoch


def digests(folder):
    """sha256 of every file directly in FOLDER (the run lock's files aside)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith('.lock')}


def temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith('.tmp'))


def new_inode(path, old):
    """The file's inode if it exists and is not `old`, else None."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return None
    return inode if inode != old else None


def previous(folder):
    found = [p for p in folder.iterdir() if p.name.startswith('previous-')]
    assert len(found) == 1, found
    return found[0]


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope='module')
def two_epochs(fashion_root, tmp_path_factory):
    """A 2-epoch run whose model_best.pth.tar is at epoch 1 (checkpoint.pth.tar at epoch 2),
    as when epoch 2 tests worse."""
    run = tmp_path_factory.mktemp('two-epochs')
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, *SMALL)) == 0
    early = load(run / 'checkpoint.pth.tar')
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 2, *SMALL, '--resume', 'auto')) == 0
    torch.save(early, run / 'model_best.pth.tar')
    return run


@pytest.fixture
def copy_of(tmp_path):
    def copy(run):
        target = tmp_path / run.name
        shutil.copytree(run, target)
        return target
    return copy


# ---------------------------------------------------------------- 1. continue or start anew

def test_resume_with_another_folder_is_refused_and_points_to_init_from(fashion_root, two_epochs,
                                                                       tmp_path, capsys):
    before = digests(two_epochs)
    argv = tiny(fashion_root, tmp_path / 'fork', '--epochs', 3, *SMALL, '--lr', 0.01,
                '--resume', two_epochs / 'model_best.pth.tar')
    assert cifar_one.main(argv) == 2
    line = error_line(capsys)
    assert f"--resume continues the run in '{two_epochs}'" in line
    assert f"-c names '{tmp_path / 'fork'}'" in line and '--init-from' in line
    assert digests(two_epochs) == before and not (tmp_path / 'fork').exists()


def test_resuming_an_older_checkpoint_in_place_needs_rewind(fashion_root, two_epochs, copy_of,
                                                            capsys):
    run = copy_of(two_epochs)
    before = digests(run)
    argv = tiny(fashion_root, run, '--epochs', 2, *SMALL, '--resume', run / 'model_best.pth.tar')
    assert cifar_one.main(argv) == 2
    line = error_line(capsys)
    assert 'is at epoch 1, but' in line and 'checkpoint.pth.tar holds epoch 2' in line
    assert '--rewind' in line and '--init-from' in line
    assert digests(run) == before

    assert cifar_one.main(argv + ['--rewind']) == 0
    out = capsys.readouterr().out
    assert f'--rewind: {run} steps back to epoch 1' in out
    moved = previous(run)
    assert {name: digest for name, digest in digests(moved).items()} == {
        name: before[name] for name in ('checkpoint.pth.tar', 'log.txt', 'summary.csv',
                                        'curves.png', 'args.json', 'status.json')}
    # model_best.pth.tar (epoch 1) was not newer: it stayed, and epoch 2 replaces it if better
    accs = [row['test_acc_1'] for row in load(run / 'checkpoint.pth.tar')['history']]
    assert load(run / 'model_best.pth.tar')['epoch'] == (2 if accs[1] > accs[0] else 1)
    # epoch 2 done again from epoch 1 is the epoch 2 that was moved aside, bit for bit
    assert_same_run(moved / 'checkpoint.pth.tar', run / 'checkpoint.pth.tar')
    assert (moved / 'log.txt').read_text() == (run / 'log.txt').read_text()


def test_init_from_starts_a_new_run_from_the_weights_only(fashion_root, two_epochs, tmp_path,
                                                          monkeypatch, capsys):
    before = digests(two_epochs)
    best = two_epochs / 'model_best.pth.tar'
    fork = tmp_path / 'fork'
    argv = tiny(fashion_root, fork, '--epochs', 1, *SMALL, '--lr', 0.01, '--init-from', best)
    # the state the new run starts from, before any training: the weights, and nothing else
    monkeypatch.setattr(engine.Trainer, 'run_epochs', lambda self: None)
    assert cifar_one.main(argv) == 0
    assert f'New run in {fork} from the weights of {best} (epoch 1)' in capsys.readouterr().out
    start, source = load(fork / 'checkpoint.pth.tar'), load(best)
    assert all(torch.equal(start['state_dict'][k], v) for k, v in source['state_dict'].items())
    assert (start['epoch'], start['step'], start['history'], start['best_acc']) == (0, 0, [], 0.0)
    assert start['optimizer']['state'] == {}  # no momentum carried over
    assert start['args']['init_from'] == str(best) and start['args']['init_from_epoch'] == 1
    monkeypatch.undo()

    shutil.rmtree(fork)
    assert cifar_one.main(argv) == 0
    state = load(fork / 'checkpoint.pth.tar')
    assert [row['lr'] for row in state['history']] == [0.01]
    assert digests(two_epochs) == before  # the source run is never written
    # provenance survives continuing the new run
    assert cifar_one.main(tiny(fashion_root, fork, '--epochs', 2, *SMALL, '--lr', 0.01,
                               '--resume', 'auto')) == 0
    args = json.loads((fork / 'args.json').read_text())
    assert (args['init_from'], args['init_from_epoch']) == (str(best), 1)


def test_init_from_into_a_folder_holding_a_run_is_refused(fashion_root, two_epochs, capsys):
    before = digests(two_epochs)
    argv = tiny(fashion_root, two_epochs, '--epochs', 1, *SMALL, '--init-from',
                two_epochs / 'model_best.pth.tar')
    assert cifar_one.main(argv) == 2
    assert 'already holds a run' in error_line(capsys)
    assert digests(two_epochs) == before


def test_a_model_best_that_is_not_a_checkpoint_is_noticed(fashion_root, two_epochs, copy_of,
                                                            capsys):
    """model_best.pth.tar replaced by every kind of file that is not a checkpoint: --resume
    auto and --resume PATH refuse in one line naming it and saying what to do, and touch
    nothing (they went on, naming a best epoch whose file was junk); doing what it says
    works."""
    run = copy_of(two_epochs)
    best = run / 'model_best.pth.tar'
    argv = tiny(fashion_root, run, '--epochs', 3, *SMALL, '--check-only')
    for i, (kind, content) in enumerate(not_checkpoints(best.read_bytes()).items()):
        best.write_bytes(content)
        before = digests(run)
        for resume in ['auto'] + [run / 'checkpoint.pth.tar'] * (i == 0):
            assert cifar_one.main(argv + ['--resume', str(resume)]) == 2, kind
            line = error_line(capsys)
            assert f'{best} is not a readable checkpoint' in line and 'move it aside' in line, \
                (kind, line)
        assert digests(run) == before, kind
    best.rename(run / 'model_best.pth.tar.damaged')
    assert cifar_one.main(argv + ['--resume', 'auto']) == 0
    assert 'would resume' in capsys.readouterr().out


# ---------------------------------------------------------------- 2. save failures

@pytest.fixture
def tiny_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs), which fills up for real."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(disk)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); '
                    'the monkeypatched-writer tests still run')
    yield disk
    subprocess.run(['umount', '-l', str(disk)], check=False)


def fill(disk, leave):
    """Fill the filesystem of DISK until LEAVE bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / 'filler', 'wb') as f:
        f.write(b'\0' * max(free - leave, 0))
    return disk / 'filler'


def test_a_full_disk_fails_with_one_line_and_keeps_the_previous_files(fashion_root, tiny_disk,
                                                                       tmp_path):
    straight, run = tmp_path / 'straight', tiny_disk / 'run'
    assert cifar_one.main(tiny(fashion_root, straight, '--epochs', 2, *SMALL)) == 0
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, *SMALL)) == 0
    before = digests(run)
    filler = fill(tiny_disk, leave=64 * 1024)  # room for the text files, not a checkpoint
    proc = run_script('cifar_one.py', *tiny(fashion_root, run, '--epochs', 2, *SMALL,
                                            '--resume', 'auto'), check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert 'could not write' in line and 'No space left on device' in line
    assert 'the previous file there is untouched' in line
    assert temporaries(run) == []  # the disk is not left full of a partial file
    after = digests(run)
    assert after['checkpoint.pth.tar'] == before['checkpoint.pth.tar']
    assert after['model_best.pth.tar'] == before['model_best.pth.tar']
    status = json.loads((run / 'status.json').read_text())
    assert (status['state'], status['epoch']) == ('failed', 1)   # epoch 2 was never saved
    filler.unlink()
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 2, *SMALL, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', run / 'checkpoint.pth.tar')


def test_save_atomic_on_a_real_full_disk(tiny_disk):
    path = tiny_disk / 'checkpoint.pth.tar'
    save_atomic({'format': 1, 'w': torch.zeros(1000)}, str(path))
    before = path.read_bytes()
    fill(tiny_disk, leave=16 * 1024)
    with pytest.raises(UserError, match=r'could not write .*: No space left on device; the '
                                        'previous file there is untouched'):
        save_atomic({'format': 1, 'w': torch.zeros(100_000)}, str(path))
    assert path.read_bytes() == before and temporaries(tiny_disk) == []


def test_a_writer_failing_like_torch_zip_writer(tmp_path, monkeypatch):
    """torch.save turns ENOSPC from the file's write() into 'RuntimeError: unexpected pos',
    keeping the OSError as the exception's context: the line still says what happened."""
    path = tmp_path / 'checkpoint.pth.tar'
    save_atomic({'format': 1}, str(path))
    before = path.read_bytes()

    def zip_writer_on_a_full_disk(obj, f):
        f.write(b'partial')
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 704')

    monkeypatch.setattr(checkpoint.torch, 'save', zip_writer_on_a_full_disk)
    with pytest.raises(UserError, match='No space left on device.*untouched'):
        save_atomic({'format': 1}, str(path))
    assert path.read_bytes() == before and temporaries(tmp_path) == []

    def a_bug(obj, f):
        f.write(b'partial')
        raise TypeError('not a disk problem')

    monkeypatch.setattr(checkpoint.torch, 'save', a_bug)
    with pytest.raises(TypeError):  # a bug is not reported as a disk problem...
        save_atomic({'format': 1}, str(path))
    assert path.read_bytes() == before and temporaries(tmp_path) == []  # ...but cleans up too


def test_two_writers_never_share_a_temporary_file(tmp_path):
    """Two processes saving the same path at once: each writes its own temporary file, so the
    file is always one writer's complete checkpoint, and no temporary file is left."""
    path = tmp_path / 'checkpoint.pth.tar'
    code = ('import sys, torch; sys.path.insert(0, sys.argv[1]); '
            'from utils.checkpoint import save_atomic; from utils.atomic import temporary_name; '
            'assert temporary_name("x") != temporary_name("x"); '
            '[save_atomic({"format": 1, "writer": int(sys.argv[3]), "w": torch.full((50_000,), '
            'float(sys.argv[3]))}, sys.argv[2]) for _ in range(40)]')
    procs = [subprocess.Popen([sys.executable, '-c', code, ROOT, str(path), str(k)])
             for k in (1, 2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    state = load_checkpoint(path, required=())
    assert torch.equal(state['w'], torch.full((50_000,), float(state['writer'])))
    assert temporaries(tmp_path) == []


# ---------------------------------------------------------------- 5. --overwrite moves aside

def launch(argv):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'cifar_one.py'), *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_an_interrupted_overwrite_leaves_no_old_file_beside_the_new_run(fashion_root, two_epochs,
                                                                         copy_of, capsys):
    run = copy_of(two_epochs)
    before = digests(run)
    old_checkpoint = (run / 'checkpoint.pth.tar').stat().st_ino
    # SIGKILL the overwriting run as soon as its first checkpoint is written (a new file: the
    # old one is moved aside first, and every save is a rename onto the name)
    proc = launch(tiny(fashion_root, run, '--epochs', 1, *SMALL, '--overwrite'))
    end = time.time() + 120
    while proc.poll() is None and time.time() < end and new_inode(run / 'checkpoint.pth.tar',
                                                                  old_checkpoint) is None:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    moved = previous(run)
    assert digests(moved) == before  # every file of the old run, intact, in one place
    assert not {'model_best.pth.tar', 'log.txt', 'summary.csv', 'curves.png'} & set(digests(run))
    # the retry needs no flag: the interrupted start had not trained
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, *SMALL)) == 0
    assert 'replaced the files of a start that never trained' in capsys.readouterr().out
    assert len(load(run / 'checkpoint.pth.tar')['history']) == 1 and previous(run) == moved

    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, *SMALL, '--overwrite')) == 0
    out = capsys.readouterr().out
    assert "--overwrite: moved the previous run's files (checkpoint.pth.tar, model_best.pth.tar, "\
           'log.txt, summary.csv, curves.png, args.json, status.json) to ' in out
    assert len([p for p in run.iterdir() if p.name.startswith('previous-')]) == 2


# ---------------------------------------------------------------- 6. batch size mid-epoch

def test_a_mid_epoch_checkpoint_refuses_another_batch_size(fashion_root, tmp_path, monkeypatch,
                                                           capsys):
    run, straight = tmp_path / 'r', tmp_path / 'straight'
    flags = ['--epochs', 2, '--train-subset', 256]
    check = engine.Trainer.check

    def signal_at_epoch2_batch2(self, meters, stop):
        if (self.epoch, self.step) == (1, 2):
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal through the real handler
        return check(self, meters, stop)

    monkeypatch.setattr(engine.Trainer, 'check', signal_at_epoch2_batch2)
    assert cifar_one.main(tiny(fashion_root, run, *flags)) == 128 + signal.SIGTERM
    monkeypatch.undo()
    before = digests(run)
    capsys.readouterr()
    for changed, saved in ((['--train-batch', 32], '--train-batch 64'),
                           (['--train-subset', 192], '--train-subset 256')):
        assert cifar_one.main(tiny(fashion_root, run, *flags, '--resume', 'auto') + list(
            map(str, changed))) == 2
        line = error_line(capsys)
        assert f'continues a run trained with {saved}, not {" ".join(map(str, changed))}' in line
        assert '--init-from' in line
        assert digests(run) == before
    assert cifar_one.main(tiny(fashion_root, run, *flags, '--resume', 'auto')) == 0
    assert cifar_one.main(tiny(fashion_root, straight, *flags)) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', run / 'checkpoint.pth.tar')


# ---------------------------------------------------------------- 7. SIGTERM in evaluation

def read_until(fd, pattern, timeout=300):
    """Read terminal FD until PATTERN shows, the other end is closed, or TIMEOUT; returns
    everything read."""
    text, end = '', time.time() + timeout
    while pattern not in text and time.time() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the process exited and closed the terminal
                break
            if not chunk:
                break
            text += chunk.decode(errors='replace')
    return text


def test_sigterm_during_evaluation_stops_within_a_test_batch(tmp_path):
    """A real process, SIGTERM as soon as its progress bar shows the epoch's last training
    batch, so while it evaluates a long test set (400 test batches): it stops at the next
    test batch, saves the trained epoch, and the resumed run is bitwise the uninterrupted one.
    Without the check between test batches it would finish the evaluation and save epoch 1
    as done, (epoch, step) = (1, 0)."""
    data = tmp_path / 'data'
    write_fashion_mnist(str(data), num_train=128, num_test=800)
    flags = ['--epochs', 1, '--test-batch', 2]
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    assert cifar_one.main(tiny(str(data), straight, *flags)) == 0
    epoch_seconds = load(straight / 'checkpoint.pth.tar')['history'][0]['seconds']

    terminal, child_end = pty.openpty()  # the progress bar is drawn on a terminal only
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'cifar_one.py'),
                             *tiny(str(data), stopped, *flags)],
                            stdout=subprocess.DEVNULL, stderr=child_end)
    os.close(child_end)
    try:
        shown = read_until(terminal, '2/2 batches')
        assert '2/2 batches' in shown, shown
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        shown += read_until(terminal, 'stopped by signal')  # printed once the state is saved
        latency = time.time() - sent
        proc.wait(timeout=300)
        shown += read_until(terminal, '\0', timeout=10)
    finally:
        os.close(terminal)
    assert proc.returncode == 128 + signal.SIGTERM, shown
    lines = [line for line in re.sub(r'\x1b\[[0-9;?]*[A-Za-z]', '', shown).replace(
        '\r', '\n').splitlines() if line.strip()]
    assert 'Traceback' not in shown and 'stopped by signal 15 at epoch 1, batch 2' in lines[-1]
    state = load(stopped / 'checkpoint.pth.tar')
    assert (state['epoch'], state['step'], state['history']) == (0, 2, [])  # trained, not tested
    print(f'\nSIGTERM during evaluation: stopped and saved {latency:.2f}s after the signal; '
          f'the whole epoch, nearly all evaluation, takes {epoch_seconds:.1f}s')
    assert latency < epoch_seconds / 2
    assert cifar_one.main(tiny(str(data), stopped, *flags, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', stopped / 'checkpoint.pth.tar')

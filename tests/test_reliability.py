"""Nothing a user trained is lost: refusals, checked loading, divergence, crashes, full disks."""
import errno
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import cifar_baseline
import cifar_one
import export_branch
from conftest import ROOT, assert_same_run, tiny
from fakedata import not_checkpoints
from utils import checkpoint
from utils.checkpoint import load_checkpoint, save_atomic
from utils.errors import UserError


def digest(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture(scope='module')
def trained(fashion_root, tmp_path_factory):
    """A one-epoch ONE run to resume, corrupt and compare against."""
    run = tmp_path_factory.mktemp('trained')
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1)) == 0
    return run


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_run_folder_is_never_silently_overwritten(fashion_root, trained, capsys):
    before = digest(trained / 'checkpoint.pth.tar')
    assert cifar_one.main(tiny(fashion_root, trained, '--epochs', 1)) == 2
    line = error_line(capsys)
    assert 'already holds a run' in line and '--resume' in line and '--overwrite' in line
    assert digest(trained / 'checkpoint.pth.tar') == before


def test_resume_auto_continues_or_starts_and_overwrite_starts_over(fashion_root, tmp_path):
    run = tmp_path / 'r'
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, '--resume', 'auto')) == 0
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 2, '--resume', 'auto')) == 0
    assert len(load_checkpoint(run / 'checkpoint.pth.tar')['history']) == 2
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1, '--overwrite')) == 0
    assert len(load_checkpoint(run / 'checkpoint.pth.tar')['history']) == 1
    assert len((run / 'log.txt').read_text().splitlines()) == 2


@pytest.mark.parametrize('flags, named', [
    (['--depth', '14'], 'depth'),
    (['--num-branches', '2'], 'num_branches'),
    (['-d', 'cifar10'], 'dataset'),
])
@pytest.mark.parametrize('how', ['--resume', '--init-from'])
def test_a_checkpoint_of_another_model_is_refused(fashion_root, trained, tmp_path, flags, named,
                                                  how, capsys):
    before = digest(trained / 'checkpoint.pth.tar')
    folder = trained if how == '--resume' else tmp_path / 'x'
    argv = tiny(fashion_root, folder, '--epochs', 2, how, trained / 'checkpoint.pth.tar') + flags
    assert cifar_one.main(argv) == 2
    line = error_line(capsys)
    assert f'mismatch: {named}' in line and 'one_resnet-8 on fashionmnist' in line
    assert digest(trained / 'checkpoint.pth.tar') == before and not (tmp_path / 'x').exists()


def test_the_baseline_refuses_a_one_checkpoint(fashion_root, trained, tmp_path, capsys):
    argv = tiny(fashion_root, tmp_path / 'x', '-e', '--resume', trained / 'checkpoint.pth.tar')
    assert cifar_baseline.main(argv) == 2
    assert 'mismatch: method, arch' in error_line(capsys)


def test_what_is_not_a_checkpoint_gets_one_line_and_no_warning(trained, tmp_path, capsys):
    """Every kind of file that is not a checkpoint (damaged, a plain pickle of any protocol,
    numpy, zip, torch files of other things): one line from load_checkpoint and from
    export_branch.py, with no warning of torch's printed before it (a plain pickle made torch
    warn about its protocol, with a line of its source)."""
    kinds = not_checkpoints((trained / 'checkpoint.pth.tar').read_bytes())
    for kind, content in kinds.items():
        path = tmp_path / kind.replace(' ', '-')
        path.write_bytes(content)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter('always')
            with pytest.raises(UserError, match='not a readable checkpoint|not a checkpoint of '
                                                'this project|is damaged or incomplete') as e:
                load_checkpoint(path)
            assert export_branch.main([str(path), '-o', str(tmp_path / 'out')]) == 2
        assert warned == [], (kind, [str(w.message) for w in warned])
        assert '\n' not in str(e.value) and 'weights_only' not in str(e.value), kind
        line = error_line(capsys)
        assert f"error: '{path}' " in line, (kind, line)   # (the program is pytest here)
    assert not (tmp_path / 'out').exists()
    with pytest.raises(UserError, match='does not exist'):
        load_checkpoint(tmp_path / 'missing.pth.tar')


class RunsCode:
    def __reduce__(self):
        return (os.system, ('touch pwned',))


def test_loading_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({'format': 1, 'payload': RunsCode()}, tmp_path / 'evil.pth.tar')
    with pytest.raises(UserError):
        load_checkpoint(tmp_path / 'evil.pth.tar')
    assert not (tmp_path / 'pwned').exists()


def test_divergence_stops_and_keeps_the_last_good_files(fashion_root, trained, tmp_path, capsys):
    run = tmp_path / 'r'
    run.mkdir()
    for name in ('checkpoint.pth.tar', 'model_best.pth.tar'):
        state = load_checkpoint(trained / name)
        state['args']['lr'] = 1e12  # a run with far too high an LR (a resume keeps its flags)
        save_atomic(state, str(run / name))
    kept = {name: digest(run / name) for name in ('checkpoint.pth.tar', 'model_best.pth.tar')}
    argv = tiny(fashion_root, run, '--epochs', 3, '--resume', 'auto', '--lr', '1e12')
    assert cifar_one.main(argv) == 3
    assert 'NaN or Inf' in error_line(capsys)
    assert {name: digest(run / name) for name in kept} == kept


def test_an_unwritable_checkpoint_folder_is_refused_before_training(fashion_root, tmp_path, capsys):
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    assert cifar_one.main(tiny(fashion_root, blocker / 'run', '--epochs', 1)) == 2
    assert 'cannot write to checkpoint folder' in error_line(capsys)


def test_a_full_disk_leaves_the_previous_checkpoint(trained, tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint.pth.tar'
    path.write_bytes((trained / 'checkpoint.pth.tar').read_bytes())
    before = digest(path)

    def disk_full(obj, f):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, 'save', disk_full)
    with pytest.raises(UserError, match='No space left on device.*untouched'):
        save_atomic({'format': 1}, str(path))
    assert digest(path) == before and os.listdir(tmp_path) == ['checkpoint.pth.tar']


def launch(argv):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, 'cifar_one.py'), *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120):
    end = time.time() + timeout
    while proc.poll() is None and time.time() < end:
        if predicate():
            return True
        time.sleep(0.0005)
    return False


def checkpoint_temporaries(run):
    """The temporary files of checkpoint writers (PATH.<pid>-<random>.tmp) in RUN."""
    if not run.exists():
        return []
    return [name for name in os.listdir(run) if name.endswith('.tmp') and name.startswith(
        ('checkpoint.pth.tar.', 'model_best.pth.tar.'))]


def test_sigkill_at_many_moments_always_leaves_a_resumable_run(fashion_root, tmp_path):
    """Kill a real training process again and again, in the middle of writing a checkpoint
    (its temporary file exists and is still there after the kill) or at a random moment,
    until each has happened at least twice; resume each time, and finish bitwise identical
    to a run never interrupted, with no temporary file left."""
    flags = ['--epochs', 4, '--train-subset', 256, '--resume', 'auto']
    reference, run = tmp_path / 'reference', tmp_path / 'killed'
    assert cifar_one.main(tiny(fashion_root, reference, *flags)) == 0
    rng = random.Random(0)
    tries = {'during a save': 0, 'at a random moment': 0}
    deadline, kills = time.time() + 600, 0
    for _ in range(40):  # bounded: a machine too busy to get there fails the assert below
        if min(tries.values()) >= 2 or time.time() > deadline:
            break
        kind = min(tries, key=tries.get)
        proc = launch(tiny(fashion_root, run, *flags))
        if kind == 'during a save':
            hit = wait_for(lambda: checkpoint_temporaries(run), proc)
        else:
            hit = wait_for(lambda: False, proc, timeout=rng.uniform(2.0, 6.0)) or proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0, proc.stderr.read()  # it finished first: start over
            shutil.rmtree(run)
            continue
        kills += 1
        if kind == 'during a save':
            hit = hit and bool(checkpoint_temporaries(run))  # died before its rename
        tries[kind] += hit
        if (run / 'checkpoint.pth.tar').exists():
            load_checkpoint(run / 'checkpoint.pth.tar')  # loads after every kill
    proc = launch(tiny(fashion_root, run, *flags))
    assert proc.wait() == 0, proc.stderr.read()
    print(f'\nfault injection: {kills} SIGKILLs ({tries}); the resumed run is bitwise '
          'identical to the uninterrupted one')
    assert tries['during a save'] >= 2 and tries['at a random moment'] >= 2, tries
    assert_same_run(reference / 'checkpoint.pth.tar', run / 'checkpoint.pth.tar')
    assert_same_run(reference / 'model_best.pth.tar', run / 'model_best.pth.tar')
    assert (reference / 'log.txt').read_text() == (run / 'log.txt').read_text()
    assert checkpoint_temporaries(run) == []  # a killed writer's are removed by the next run


def test_save_every_minutes_loses_minutes_not_the_epoch(fashion_root, tmp_path, monkeypatch):
    """A crash in the middle of epoch 2 (a RuntimeError, as a dying process leaves it): with
    --save-every-minutes the checkpoint holds a step of epoch 2, and the resumed run ends
    bitwise where the uninterrupted one does."""
    from utils.engine import Trainer
    flags = ['--epochs', 2, '--train-subset', 256, '--train-batch', 32]
    straight, crashed = tmp_path / 'straight', tmp_path / 'crashed'
    assert cifar_one.main(tiny(fashion_root, straight, *flags)) == 0

    step = Trainer.train_and_count
    calls = []

    def dies_at_step_13(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 13:   # epoch 2, batch 5 of 8
            raise RuntimeError('simulated crash')
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, 'train_and_count', dies_at_step_13)
    with pytest.raises(RuntimeError, match='simulated crash'):
        cifar_one.main(tiny(fashion_root, crashed, *flags, '--save-every-minutes', 1e-9))
    saved = load_checkpoint(str(crashed / 'checkpoint.pth.tar'))
    assert (saved['epoch'], saved['step']) == (1, 4)     # the last step before the crash
    monkeypatch.setattr(Trainer, 'train_and_count', step)
    assert cifar_one.main(tiny(fashion_root, crashed, *flags, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', crashed / 'checkpoint.pth.tar')

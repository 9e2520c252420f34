"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import cifar_baseline
import cifar_kd
import cifar_one
import export_branch
from conftest import ROOT, run_script, tiny
from utils import engine


def test_the_seed_command_names_the_missing_gpu(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'cifar_baseline.py'), '-a', 'resnet', '--dataset',
         'cifar100', '--depth', '32', '--epochs', '300', '--gpu-id', '5', '--schedule', '151',
         '225', '--gamma', '0.1', '--wd', '1e-4', '--checkpoint', 'checkpoints/cifar100/baseline-32'],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    if proc.returncode == 0:
        pytest.skip('this machine has a GPU 5')
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'cifar_baseline.py: error: GPU 5 does not exist: this machine has 0 CUDA GPU(s); '
        'pass another --gpu-id, or --device cpu']
    assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.parametrize('flags, message', [
    (['--depth', '30'], '--depth: depth must be 6n+2'),
    (['-a', 'vgg16'], "argument -a/--arch: invalid choice: 'vgg16'"),
    (['-d', 'mnist'], "argument -d/--dataset: invalid choice: 'mnist'"),
    (['--num-branches', '0'], '--num-branches must be at least 1'),
    (['--resume', 'nowhere/checkpoint.pth.tar'], "checkpoint 'nowhere/checkpoint.pth.tar' does "
                                                 'not exist'),
    (['-e'], '-e/--evaluate needs --resume PATH'),
    (['--drop', '0.5'], '--drop: ResNet (-a one_resnet) has no such setting; it is a flag of -a wrn'),
    (['--train-batch', '0'], '--train-batch must be at least 1'),
    (['--device', 'cuda'], 'no CUDA GPU is available'),
    (['--gpu-id', '0,1'], 'for several GPUs use torchrun'),
    (['--lr', '-1'], '--lr must be a positive number, got -1.0'),
    (['--lr', 'nan'], '--lr must be a finite number, got nan'),
    (['--gamma', '0'], '--gamma must be a positive number, got 0.0'),
    (['--momentum', '-0.5'], '--momentum must be in [0, 1), got -0.5'),
    (['--momentum', '1.5'], '--momentum must be in [0, 1), got 1.5'),
    (['--temperature', 'inf'], '--temperature must be a finite number, got inf'),
    (['--wd=-1e-4'], '--weight-decay must be a number >= 0, got -0.0001'),
    (['--nesterov', '--momentum', '0'], '--nesterov needs --momentum > 0'),
    (['--schedule', '-1', '5'], '--schedule milestones are 0-based epochs (>= 0), got -1'),
    (['--temperature', '0'], '--temperature must be > 0, got 0.0'),
    (['--temperature', '-3'], '--temperature must be > 0, got -3.0'),
    (['--consistency_rampup', '-1'], '--consistency_rampup must be >= 0 epochs, got -1.0'),
    (['--train-batch', '1'], '--train-batch 1 gives 1 image(s) per batch to each of 1 rank(s); '
                             'BatchNorm needs at least 2'),
    (['--start-epoch', '1'], '--start-epoch 1 leaves nothing to train with --epochs 1'),
    (['--train-subset', '513'], "--train-subset 513 is larger than fashionmnist's 512 training "
                                'images'),
    (['--init-from', 'nowhere/model_best.pth.tar'], "--init-from: checkpoint "
                                                    "'nowhere/model_best.pth.tar' does not exist"),
    (['--rewind'], '--rewind only applies to --resume PATH'),
    (['--resume', 'auto', '--overwrite'], '--overwrite starts a new run and --resume continues '
                                          'one: pass one of them'),
])
def test_bad_flags(flags, message, fashion_root, tmp_path, capsys):
    if torch.cuda.is_available() and ('cuda' in flags or '--gpu-id' in flags):
        pytest.skip('these GPU errors need a machine without CUDA')
    try:
        code = cifar_one.main(tiny(fashion_root, tmp_path / 'run', '--epochs', 1) + flags)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / 'run').exists()


def test_absent_data_that_cannot_be_downloaded_says_where_to_put_it(tmp_path):
    proc = run_script('cifar_one.py', '-d', 'cifar100', '--data-dir', tmp_path / 'data', '-c',
                      tmp_path / 'run', '--epochs', 1, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert 'cifar100 is missing or corrupt' in line and 'cifar-100-python' in line
    assert str(tmp_path / 'data') in line
    assert not (tmp_path / 'run' / 'checkpoint.pth.tar').exists()


def test_a_train_batch_refusal_leaves_nothing_that_blocks_the_retry(fashion_root, tmp_path, capsys):
    argv = tiny(fashion_root, tmp_path / 'run', '--epochs', 1, '--train-subset', 128)
    assert cifar_one.main(argv + ['--train-batch', '1']) == 2
    assert 'BatchNorm needs at least 2' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()
    assert cifar_one.main(argv) == 0  # the same command, fixed, just works


def test_a_run_that_failed_before_training_does_not_block_the_retry(fashion_root, tmp_path,
                                                                    monkeypatch, capsys):
    """A failure after the folder was taken (here simulated in the first epoch) leaves files
    of a start that never trained: the retry replaces them and says so."""
    def broken(self, stop, lr):
        raise RuntimeError('simulated failure in the first batch')

    argv = tiny(fashion_root, tmp_path / 'run', '--epochs', 1, '--train-subset', 128)
    monkeypatch.setattr(engine.Trainer, 'train_epoch', broken)
    with pytest.raises(RuntimeError, match='simulated'):
        cifar_one.main(argv)
    assert (tmp_path / 'run' / 'checkpoint.pth.tar').exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert cifar_one.main(argv) == 0
    assert 'replaced the files of a start that never trained' in capsys.readouterr().out
    assert not [p for p in (tmp_path / 'run').iterdir() if p.name.startswith('previous-')]


def given_a_checkpoint(tool, path, tmp_path, fashion_root, teacher):
    """The exit status of TOOL given PATH where it reads a checkpoint (the training ones
    with --check-only: nothing is trained or written)."""
    subset = ['--train-subset', 256, '--epochs', 1]
    if tool == 'export':
        return export_branch.main([str(path), '-o', str(tmp_path / 'exported.pth.tar')])
    if tool == '-e':
        return cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume', path))
    if tool == '--teacher':
        return cifar_kd.main(tiny(fashion_root, tmp_path / 'kd', *subset, '--teacher', path,
                                  '--check-only'))
    if tool == '--init-from':
        return cifar_baseline.main(tiny(fashion_root, tmp_path / 'new', *subset, '--init-from',
                                        path, '--check-only'))
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    return cifar_baseline.main(tiny(fashion_root, folder, *subset, '--resume', path,
                                    '--check-only'))


@pytest.mark.parametrize('tool', ['--resume', '-e', '--init-from', '--teacher', 'export'])
def test_a_folder_given_for_a_checkpoint_names_what_works(tool, fashion_root, teacher, tmp_path,
                                                          capsys):
    """A run folder, or an empty one, where each tool reads a checkpoint file: one line that
    calls it a directory and suggests only what that tool takes (-e was told to use --resume
    auto, which it refuses); each suggestion, followed, is accepted."""
    run, empty = tmp_path / 'run', tmp_path / 'empty'
    shutil.copytree(os.path.dirname(teacher), run)
    empty.mkdir()
    for folder in (run, empty):
        capsys.readouterr()
        assert given_a_checkpoint(tool, folder, tmp_path, fashion_root, teacher) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"'{folder}' is a directory, not a checkpoint file" in err[0], err
        assert ('--resume auto' in err[0]) == (tool == '--resume'), err
        passed = re.findall(r'pass ([^\s,]+)', err[0])
        assert passed == ([f'{run}/checkpoint.pth.tar'] if folder == run else []), err
        for path in passed:
            assert given_a_checkpoint(tool, path, tmp_path, fashion_root, teacher) == 0
        if tool == '--resume':
            assert f'use --resume auto -c {folder}' in err[0]
            assert cifar_baseline.main(tiny(fashion_root, folder, '--train-subset', 256,
                                            '--epochs', 1, '--resume', 'auto',
                                            '--check-only')) == 0
    assert os.listdir(empty) == []


def test_a_text_file_given_to_resume_is_not_a_readable_checkpoint(fashion_root, tmp_path, capsys):
    notes = tmp_path / 'notes.txt'
    notes.write_text('epoch 3: looked fine\n')
    assert cifar_one.main(tiny(fashion_root, tmp_path, '--epochs', 1, '--resume', notes)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is not a readable checkpoint' in err[0], err
    assert os.listdir(tmp_path) == ['notes.txt']


def identity_of_a_tiny_one_run():
    return {'format': 1, 'method': 'one', 'arch': 'one_resnet', 'depth': 8,
            'dataset': 'fashionmnist', 'num_branches': 3, 'distill': True, 'gate': 'learned',
            'branch_point': 'stage3'}


@pytest.mark.parametrize('content, message', [
    ({'epoch': 1}, 'is damaged or incomplete: it lacks state_dict'),
    ({'epoch': 1, 'state_dict': {}}, 'holds weights only (an export)'),
    ({'epoch': 1, 'state_dict': {}, 'optimizer': {}, 'step': 0, 'best_acc': 0.0},
     'is damaged or incomplete: it lacks history, meters, rng, seed, args'),
    ({'epoch': 1, 'state_dict': {'x': torch.zeros(1)}, 'optimizer': {}, 'step': 0,
      'best_acc': 0.0, 'history': [], 'meters': None, 'rng': {}, 'seed': 7, 'args': {}},
     'is damaged or does not fit this run'),
])
def test_a_checkpoint_shaped_dict_with_missing_or_wrong_keys(fashion_root, tmp_path, content,
                                                              message, capsys):
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save({**identity_of_a_tiny_one_run(), **content}, path)
    assert cifar_one.main(tiny(fashion_root, tmp_path, '--epochs', 2, '--resume', path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert os.listdir(tmp_path) == ['checkpoint.pth.tar']


def test_random_bytes_for_fashion_mnist_say_which_dataset_is_corrupt(tmp_path, capsys):
    raw = tmp_path / 'data' / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        (raw / name).write_bytes(os.urandom(4096))
    assert cifar_one.main(tiny(str(tmp_path / 'data'), tmp_path / 'run', '--epochs', 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'fashionmnist is missing or corrupt' in err[0], err
    assert 'not in the expected format' in err[0]
    assert not (tmp_path / 'run').exists()


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT to a real process at moments while Python imports torch, and while it reads the
    data: exit 130, one line, no traceback, nothing written. (A KeyboardInterrupt inside a
    library's import was once swallowed, once a RecursionError from a half-imported numpy.)"""
    from fakedata import write_fashion_mnist
    root = tmp_path / 'data'
    write_fashion_mnist(str(root), num_train=10000, num_test=100)
    for moment in (0.1, 0.3, 0.6, 'reading the data'):
        run = tmp_path / str(moment).replace(' ', '-')
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'cifar_one.py'), *tiny(root, run, '--epochs', 1)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
        try:
            if moment == 'reading the data':
                assert wait_until_open(proc, str(root / 'FashionMNIST' / 'raw')), 'no data read'
            else:
                time.sleep(moment)  # importing torch alone takes a second or more
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130 and 'Traceback' not in err, (moment, err)
        line, = err.strip().splitlines()
        assert 'interrupted (Ctrl-C)' in line, (moment, line)
        assert not run.exists(), moment


def wait_until_open(proc, prefix, timeout=120):
    """Whether process PROC opens a file under PREFIX (seen in /proc/PID/fd) within TIMEOUT."""
    fds, end = f'/proc/{proc.pid}/fd', time.time() + timeout
    while proc.poll() is None and time.time() < end:
        try:
            names = os.listdir(fds)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(os.path.join(fds, name)).startswith(prefix):
                    return True
            except OSError:
                pass
    return False

"""Bad input: one clear line on stderr, a non-zero exit, no traceback, nothing written."""
import os
import subprocess
import sys

import pytest
import torch

import cifar_one
from conftest import ROOT, run_script
from test_training import tiny


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
    (['-d', 'imagenet'], "argument -d/--dataset: invalid choice: 'imagenet'"),
    (['--num-branches', '0'], '--num-branches must be at least 1'),
    (['--resume', 'nowhere/checkpoint.pth.tar'], "checkpoint 'nowhere/checkpoint.pth.tar' does "
                                                 'not exist'),
    (['-e'], '-e/--evaluate needs --resume PATH'),
    (['--drop', '0.5'], 'no dropout layer'),
    (['--train-batch', '0'], '--train-batch must be at least 1'),
    (['--device', 'cuda'], 'no CUDA GPU is available'),
    (['--gpu-id', '0,1'], 'for several GPUs use torchrun'),
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

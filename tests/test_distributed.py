"""torchrun with 2 CPU processes (gloo): the same scripts, the same results, one set of files."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import cifar_one
from conftest import ROOT
from test_training import assert_same_run, load, tiny

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']


def torchrun(script, *argv, **kwargs):
    return subprocess.run([*TORCHRUN, os.path.join(ROOT, script), *map(str, argv)],
                          capture_output=True, text=True, timeout=600, **kwargs)


def test_gradients_of_a_split_batch_equal_the_whole_batch():
    proc = torchrun('tests/ddp_gradients.py')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'max relative gradient difference' in proc.stdout


def test_two_ranks_train_once_log_once_and_resume_in_one_process(fashion_root, tmp_path):
    run = tmp_path / 'r'
    proc = torchrun('cifar_one.py', *tiny(fashion_root, run, '--epochs', 2))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Epoch 1/2') == 1 and proc.stdout.count('Epoch 2/2') == 1
    assert sorted(os.listdir(run)) == ['args.json', 'checkpoint.pth.tar', 'curves.png', 'log.txt',
                                       'model_best.pth.tar', 'summary.csv']
    state = load(run / 'checkpoint.pth.tar')
    assert not any(k.startswith(('module.', '_orig_mod.')) for k in state['state_dict'])
    # the 512 training images are counted once per epoch, not once per rank
    assert state['history'][0]['train_acc_1'] * 512 / 100 == pytest.approx(
        round(state['history'][0]['train_acc_1'] * 512 / 100))
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 3, '--resume', 'auto')) == 0
    assert load(run / 'checkpoint.pth.tar')['epoch'] == 3


def test_sharded_evaluation_counts_every_test_image_once(fashion_root, tmp_path):
    """200 test images over 2 ranks give exactly the single-process accuracies."""
    run = tmp_path / 'r'
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1)) == 0
    argv = tiny(fashion_root, tmp_path / 'x', '-e', '--resume', run / 'checkpoint.pth.tar')
    single = subprocess.run([sys.executable, os.path.join(ROOT, 'cifar_one.py'), *map(str, argv)],
                            capture_output=True, text=True, timeout=300)
    distributed = torchrun('cifar_one.py', *argv)
    assert single.returncode == 0 and distributed.returncode == 0, distributed.stderr
    assert distributed.stdout == single.stdout and 'ensemble (ONE-E)' in single.stdout


def test_preempted_torchrun_resumes_bitwise_identically(fashion_root, tmp_path):
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    assert torchrun('cifar_one.py', *tiny(fashion_root, straight, '--epochs', 2)).returncode == 0
    proc = subprocess.Popen([*TORCHRUN, os.path.join(ROOT, 'cifar_one.py'),
                             *map(str, tiny(fashion_root, stopped, '--epochs', 2))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (stopped / 'log.txt').exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and 'resume with --resume' in err
    resumed = torchrun('cifar_one.py', *tiny(fashion_root, stopped, '--epochs', 2, '--resume', 'auto'))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(straight / 'checkpoint.pth.tar', stopped / 'checkpoint.pth.tar')


def test_a_global_batch_that_does_not_divide_is_refused(fashion_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'r', '--train-batch', 63)) == 2
    assert 'does not divide over 2 ranks' in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU refusal')
def test_sync_bn_on_cpu_ranks_is_refused(fashion_root, tmp_path):
    proc = torchrun('cifar_one.py', *tiny(fashion_root, tmp_path / 'r', '--sync-bn'))
    assert proc.returncode != 0 and '--sync-bn needs CUDA' in proc.stderr

"""torchrun --max-restarts: a worker SIGKILLed mid-epoch is restarted with the others, the run
continues from its last checkpoint (the last finished epoch) and ends bitwise equal to a run
that was never interrupted: the repeated part of the epoch sees the same data order,
augmentation and RNG states, which are functions of (seed, epoch) or saved.

PyTorch 2.14's torchrun shares its store with the workers across restarts, and restarted
gloo workers then read the previous attempt's addresses ("connectFullMesh ... Connection
refused") or hang (pytorch/pytorch#135712); TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each
attempt a store of its own, as docs/SCALE.md says.
"""
import csv
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, assert_same_run, load, tiny
from test_distributed import ENV, torchrun

ELASTIC = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
           '--max-restarts', '1']


def worker_of_rank(parent, rank):
    """The pid of torchrun's worker process `rank` (torchrun starts them as its children)."""
    for task in os.listdir(f'/proc/{parent}/task'):
        with open(f'/proc/{parent}/task/{task}/children') as f:
            for pid in map(int, f.read().split()):
                with open(f'/proc/{pid}/environ', 'rb') as env:
                    if f'RANK={rank}'.encode() in env.read().split(b'\0'):
                        return pid
    raise AssertionError(f'no worker of rank {rank} under pid {parent}')


def test_a_worker_killed_mid_epoch_is_restarted_and_the_run_ends_as_if_uninterrupted(
        fashion_root, tmp_path):
    straight, killed = tmp_path / 'straight', tmp_path / 'killed'
    flags = ['--epochs', 3, '--resume', 'auto']
    assert torchrun('cifar_one.py', *tiny(fashion_root, straight, *flags)).returncode == 0

    proc = subprocess.Popen([*ELASTIC, os.path.join(ROOT, 'cifar_one.py'),
                             *tiny(fashion_root, killed, *flags)],
                            env={**ENV, 'TORCH_DISABLE_SHARE_RDZV_TCP_STORE': '1'},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (killed / 'summary.csv').exists():
        time.sleep(0.005)
    with open(killed / 'summary.csv') as f:
        epoch_seconds = float(next(csv.DictReader(f))['seconds'])
    time.sleep(epoch_seconds / 2)  # epoch 1 is saved: kill rank 1 about halfway into epoch 2
    os.kill(worker_of_rank(proc.pid, 1), signal.SIGKILL)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 0, err
    assert 'Resuming' in out and 'epoch 2, batch 0' in out, out  # from epoch 1's checkpoint
    assert out.count('Epoch 1/3') == 1 and out.count('Epoch 3/3') == 1
    assert 'Traceback' not in err and '[rank' not in err, err
    # Rank 0 said why it stopped: a collective broke, or torchrun's SIGTERM came first
    ours = [line for line in err.splitlines() if line.startswith('cifar_one.py: ')]
    assert len(ours) == 1 and ours[0].startswith(('cifar_one.py: stopped: another rank failed',
                                                  'cifar_one.py: stopped by signal 15')), err
    assert_same_run(straight / 'checkpoint.pth.tar', killed / 'checkpoint.pth.tar')
    assert load(killed / 'checkpoint.pth.tar')['epoch'] == 3

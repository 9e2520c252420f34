"""torchrun with 2 CPU processes (gloo): the same scripts, the same results, one set of files,
the dataset prepared once, and one line for a failure on any rank."""
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import cifar_one
from conftest import ROOT, assert_same_run, load, tiny
from fakedata import write_fashion_mnist, write_image_folder
from utils.data import FASHION_FILES

TORCHRUN = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
# OMP_NUM_THREADS set: torchrun's banner about it stays out of the output the tests read.
# The proxy on a closed port makes every download fail at once, online or not.
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'http_proxy': 'http://127.0.0.1:9',
       'https_proxy': 'http://127.0.0.1:9'}


def torchrun(script, *argv, env=None, **kwargs):
    return subprocess.run([*TORCHRUN, os.path.join(ROOT, script), *map(str, argv)],
                          capture_output=True, text=True, timeout=600,
                          env={**ENV, **(env or {})}, **kwargs)


def assert_one_line_from_us(proc, prog, expected):
    """A failed torchrun: one line of ours (and the exit status), no rank's traceback, only
    torchrun's own failure summary (whose Python traceback ends in ChildFailedError)."""
    assert proc.returncode != 0
    ours = [l for l in proc.stderr.splitlines() if l.startswith(f'{prog}:')]
    assert len(ours) == 1 and expected in ours[0], proc.stderr
    assert proc.stdout == ''
    output = proc.stdout + proc.stderr
    assert output.count('Traceback') == 1 and '[rank' not in output, output
    summary = output[output.index('Traceback'):]  # torchrun's, after the ranks have exited
    assert 'ChildFailedError' in summary and 'Root Cause' in summary and ours[0] not in summary
    return ours[0]


def write_debian_fashion_mnist(folder):
    """What Debian's package dataset-fashion-mnist installs: the four idx files, gzipped."""
    source = folder.parent / 'generated'
    write_fashion_mnist(str(source), num_train=512, num_test=200)
    folder.mkdir()
    for name in os.listdir(source / 'FashionMNIST' / 'raw'):
        with open(source / 'FashionMNIST' / 'raw' / name, 'rb') as src, \
                gzip.open(folder / f'{name}.gz', 'wb') as dst:
            shutil.copyfileobj(src, dst)


# cifar_one.py, recording in GUNZIP_LOG which rank opens which Debian .gz file.
COUNTING_GUNZIPS = f"""
import gzip, os, sys
sys.path.insert(0, {ROOT!r})
import cifar_one
gunzip = gzip.open
def counted(path, *args, **kwargs):
    with open(os.environ['GUNZIP_LOG'], 'a') as log:
        print(os.environ['RANK'], os.path.basename(path), file=log)
    return gunzip(path, *args, **kwargs)
gzip.open = counted
sys.exit(cifar_one.main())
"""


def test_two_ranks_prepare_an_empty_data_dir_once_and_train(tmp_path):
    debian, data = tmp_path / 'debian', tmp_path / 'data'
    write_debian_fashion_mnist(debian)
    script = tmp_path / 'counting.py'
    script.write_text(COUNTING_GUNZIPS)
    proc = torchrun(script, *tiny(str(data), tmp_path / 'r', '--epochs', 1),
                    env={'ONE_DEBIAN_FASHION_MNIST': str(debian),
                         'GUNZIP_LOG': str(tmp_path / 'gunzips')})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Epoch 1/1') == 1
    # rank 0 alone gunzipped each file, once; rank 1 found them ready (no temporaries left)
    gunzips = (tmp_path / 'gunzips').read_text().splitlines()
    assert sorted(gunzips) == sorted(f'0 {name}.gz' for name in FASHION_FILES)
    assert sorted(os.listdir(data / 'FashionMNIST' / 'raw')) == sorted(FASHION_FILES)


# cifar_one.py, where rank 0 starts late (as on a loaded machine, where one rank's imports
# take seconds longer): rank 1 meets the bad flag first, and its exit must not make torchrun
# stop rank 0 before rank 0 has printed the line.
RANK_0_STARTS_LATE = f"""
import os, sys, time
sys.path.insert(0, {ROOT!r})
sys.argv[0] = 'cifar_one.py'
if os.environ['RANK'] == '0':
    time.sleep(3)
import cifar_one
sys.exit(cifar_one.main())
"""


@pytest.mark.parametrize('flag, expected', [
    (('--depth', 9), 'error: --depth: depth must be 6n+2'),
    (('--epochs', 'x'), "error: argument --epochs: invalid int value: 'x'"),
])
def test_a_bad_flag_under_torchrun_is_one_line(fashion_root, tmp_path, flag, expected):
    script = tmp_path / 'late.py'
    script.write_text(RANK_0_STARTS_LATE)
    proc = torchrun(script, *tiny(fashion_root, tmp_path / 'r', *flag))
    assert_one_line_from_us(proc, 'cifar_one.py', expected)


def test_missing_data_under_torchrun_is_one_line(tmp_path):
    proc = torchrun('cifar_one.py', *tiny(str(tmp_path / 'empty'), tmp_path / 'r'),
                    env={'ONE_DEBIAN_FASHION_MNIST': str(tmp_path / 'no-debian-here')})
    assert_one_line_from_us(proc, 'cifar_one.py', 'error: fashionmnist is missing or corrupt')


def test_an_imagenet_link_loop_under_torchrun_is_one_line_and_writes_nothing(tmp_path):
    """Damaged data, refused on both ranks (each scans the folders itself): one line, from
    rank 0, nothing written. The class of such damage is generated in one process
    (tests/test_imagenet.py); damaged run files (tests/test_faults.py) are refused at the
    same point, before the first write, as missing data is here."""
    data = write_image_folder(str(tmp_path / 'data'), classes=2, train_per_class=2,
                              val_per_class=1, size=(32, 32))
    os.symlink('..', os.path.join(data, 'train', 'n00000000', 'loop'))
    proc = torchrun('cifar_one.py', '-d', 'imagenet', '--data-dir', data, '--image-size', 32,
                    '--train-batch', 4, '-j', 0, '-c', tmp_path / 'r')
    assert_one_line_from_us(proc, 'cifar_one.py', 'train and train/n00000000/loop are one folder '
                                                  'under two names')
    assert not (tmp_path / 'r').exists()


# cifar_one.py, where rank 1 alone fails (as if only its node lacked a file or a GPU).
RANK_1_FAILS = f"""
import os, sys
sys.path.insert(0, {ROOT!r})
import cifar_one
from utils import engine
from utils.errors import UserError
build_model = engine.build_model
def fails_on_rank_1(*args, **kwargs):
    if os.environ['RANK'] == '1':
        raise UserError('rank 1 cannot build its model')
    return build_model(*args, **kwargs)
engine.build_model = fails_on_rank_1
sys.exit(cifar_one.main())
"""


def test_a_failure_of_one_rank_alone_is_one_line_from_rank_0(fashion_root, tmp_path):
    script = tmp_path / 'rank1_fails.py'
    script.write_text(RANK_1_FAILS)
    proc = torchrun(script, *tiny(fashion_root, tmp_path / 'r'))
    line = assert_one_line_from_us(proc, 'rank1_fails.py', 'rank 1 cannot build its model')
    assert line.endswith('(rank 1)')
    assert 'exitcode  : 2' in proc.stderr  # rank 0 exits with the failing rank's status


def test_gradients_of_a_split_batch_equal_the_whole_batch():
    proc = torchrun('tests/ddp_gradients.py')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'max relative gradient difference' in proc.stdout


def test_two_ranks_train_once_log_once_and_resume_in_one_process(fashion_root, tmp_path):
    run = tmp_path / 'r'
    proc = torchrun('cifar_one.py', *tiny(fashion_root, run, '--epochs', 2))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Epoch 1/2') == 1 and proc.stdout.count('Epoch 2/2') == 1
    assert sorted(f for f in os.listdir(run) if not f.startswith('.')) == [
        'args.json', 'checkpoint.pth.tar', 'curves.png', 'log.txt', 'model_best.pth.tar',
        'status.json', 'summary.csv']
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

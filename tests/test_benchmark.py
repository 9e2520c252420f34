"""benchmark.py: a tiny run prints the table with its `vs conventional` column and writes both
rates to JSON (on the CPU always, on CUDA where a GPU is); the conventional pipeline serves
images the way torchvision's CIFAR10 does; bad requests and failed measurements are one line."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision import datasets

import benchmark
import gpu_check
from benchmarks import cifar
from conftest import ROOT

NO_GPU = 'no CUDA GPU on this machine'
DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason=NO_GPU))]
# Two depth-8 models, 2 x 2 steps of 16 images each way, a 128^3 reference matmul: seconds.
TINY = ['--models', 'resnet-8', 'one_resnet-8', '--batch', '16', '--test-batch', '10',
        '--steps', '2', '--repeats', '2', '--warmup', '1', '--conventional-repeats', '2',
        '--workers', '1', '--matmul-size', '128', '--threads', '1']


def run_benchmark(*flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'benchmark.py'), *map(str, flags)],
                          capture_output=True, text=True, timeout=600)


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize('device', DEVICES)
def test_tiny_run_prints_vs_conventional_and_writes_both_rates(device, tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_benchmark(*TINY, '--device', device, '--json', out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith('model'))
    assert 'vs conventional' in lines[header] and 'DataLoader with 1 worker' in proc.stdout
    table = {l.split()[0]: l.split() for l in lines[header + 1:]}
    assert sorted(table) == ['one_resnet-8', 'resnet-8']

    results = json.loads(out.read_text())
    assert results['flags']['device'] == device and 'one' not in results['flags']
    for row in results['results']:
        assert row['train_img_s'] > 0 and row['conventional_img_s'] > 0
        ours, theirs = row['train_img_s_repeats'], row['conventional_img_s_repeats']
        assert len(ours) == len(theirs) == 2  # alternating blocks, compared in pairs
        assert row['vs_conventional'] == pytest.approx((ours[0] / theirs[0] + ours[1] / theirs[1]) / 2)
        assert row['train_img_s'] == pytest.approx(sum(ours) / 2)
        assert row['conventional_workers'] == 1
        printed = table[row['model']]
        assert float(printed[1]) == pytest.approx(row['train_img_s'], abs=0.051)
        assert float(printed[2]) == pytest.approx(row['conventional_img_s'], abs=0.051)
        assert printed[3] == f'{row["vs_conventional"]:.2f}x'
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]


def test_a_pack_is_measured_beside_the_run_alone_and_the_conventional_pipeline(capsys):
    """--pack 2: two runs of one_resnet-8 as one pack, its blocks alternating with the run
    alone's; its img/s counts both runs' images, per run is half of it, and vs solo is the
    median of the ratios of adjacent blocks. (The measuring process's work, in this one; the
    table's columns from its result.)"""
    flags = ['--models', 'one_resnet-8', *TINY[3:], '--pack', '2']
    assert benchmark.main([*flags, '--one', 'one_resnet-8']) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row['pack'] == 2 and row['conventional_img_s'] > 0
    solo, packed = row['train_img_s_repeats'], row['pack_train_img_s_repeats']
    assert len(packed) == 2 and all(rate > 0 for rate in packed)
    assert row['pack_train_img_s'] == pytest.approx(sum(packed) / 2)
    assert row['pack_per_run_img_s'] == pytest.approx(row['pack_train_img_s'] / 2)
    assert row['pack_vs_solo'] == pytest.approx((packed[0] / solo[0] + packed[1] / solo[1]) / 2)

    benchmark.print_header(benchmark.parse(flags), 'a CPU')
    benchmark.print_row({**row, 'eval_over_train': 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].startswith('pack: 2 runs of the model (seeds 0-1) as one stacked model')
    assert lines[4].split()[-6:] == ['pack', 'img/s', 'per', 'run', 'vs', 'solo']
    printed = lines[5].split()
    assert float(printed[-3]) == pytest.approx(row['pack_train_img_s'], abs=0.051)
    assert float(printed[-2]) == pytest.approx(row['pack_per_run_img_s'], abs=0.051)
    assert printed[-1] == f'{row["pack_vs_solo"]:.2f}x'


def test_without_the_conventional_pipeline_the_column_says_so(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_benchmark(*TINY[:2], *TINY[3:], '--conventional-repeats', 0, '--json', out)
    assert proc.returncode == 0, proc.stderr
    row = proc.stdout.splitlines()[-1].split()
    assert row[0] == 'resnet-8' and row[2:4] == ['-', '-']
    result = json.loads(out.read_text())['results'][0]
    assert result['conventional_img_s'] is None and result['vs_conventional'] is None


def refused(capsys, *flags):
    """Run benchmark.main in this process (a refusal happens before any measuring process
    starts); returns (exit status, the one line on stderr), checking nothing was printed."""
    threads = torch.get_num_threads()
    try:
        status = benchmark.main([*TINY, *map(str, flags)])
    except SystemExit as e:  # argparse's refusals
        status = e.code
    out, err = capsys.readouterr()
    assert out == '', out  # no model was measured: the table would be there
    assert torch.get_num_threads() == threads  # --threads 1 did not stay with the caller
    return status, one_line(err)


@pytest.mark.parametrize('where, message', [
    ('missing/bench.json', 'does not exist'),
    ('', 'is a folder'),
])
def test_json_that_cannot_be_written_fails_before_measuring(where, message, tmp_path, capsys):
    status, line = refused(capsys, '--json', tmp_path / where)
    assert status == 2 and message in line


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_json_into_a_read_only_folder_fails_before_measuring(tmp_path, capsys):
    folder = tmp_path / 'ro'
    folder.mkdir()
    folder.chmod(0o500)
    try:
        status, line = refused(capsys, '--json', folder / 'bench.json')
    finally:
        folder.chmod(0o700)
    assert status == 2 and 'cannot write into' in line


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without a GPU')
def test_cuda_without_a_gpu_is_one_line(capsys):
    status, line = refused(capsys, '--device', 'cuda')
    assert status == 2 and 'no CUDA GPU is available' in line


@pytest.mark.parametrize('flags, message', [
    (['--models', 'resnet-9'], 'depth must be 6n+2'),
    (['--models', 'mobilenet-10'], 'is neither ARCH-DEPTH with ARCH one of resnet, resnext'),
    (['--models', 'one_resnext-12'], 'depth must be 9n+2'),
    (['--models', 'vgg-12'], 'depth must be one of 11, 13, 16, 19'),
    (['--batch', '1'], 'BatchNorm needs 2 images'),
    (['--steps', '0'], '--steps must be at least 1'),
    (['--conventional-repeats', '3'], 'is more than --repeats 2'),
    (['--pack', '1'], '--pack 1: a pack holds 2 runs or more'),
    (['--pack', '2', '--amp', 'fp16'], "fp16's gradient scaler would skip every run's"),
    (['--pack', '2', '--compile'], 'not with --compile'),
    (['--pack', '2', '--models', 'one_okddip_vgg-11'], 'dropout masks'),
])
def test_bad_requests_are_one_line(flags, message, capsys):
    status, line = refused(capsys, *flags)
    assert status == 2 and message in line


def test_a_failed_measurement_shows_its_message_in_one_line():
    """A batch too large to allocate fails inside the measuring process: its own message
    (numpy's, here) comes back as one line, and the exit status is 1."""
    proc = run_benchmark(*TINY, '--batch', 2 ** 50)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert line.startswith('benchmark.py: error: measuring resnet-8 failed: ')
    assert 'too big' in line or 'allocate' in line or 'dimension' in line, line
    assert 'Traceback' not in proc.stderr


def test_failure_reason_is_the_last_message_line_or_the_signal():
    traceback = ('Traceback (most recent call last):\n  File "b.py", line 1, in <module>\n'
                 '    main()\n    ^^^^^^\nValueError: first\n\nDuring handling of the above '
                 'exception, another exception occurred:\n\nTraceback (most recent call last):\n'
                 '  File "b.py", line 3, in main\n    f()\ntorch.OutOfMemoryError: CUDA out of '
                 'memory.\nTried to allocate 2 GiB\n\n')
    assert benchmark.failure_reason(1, traceback) == \
        'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB'
    assert benchmark.failure_reason(1, 'warning: x\nbenchmark.py: error: bad\n') == 'benchmark.py: error: bad'
    assert benchmark.failure_reason(1, 'RuntimeError: CUDA   out of memory\n') == \
        'RuntimeError: CUDA out of memory'
    assert benchmark.failure_reason(-signal.SIGKILL, '') == 'killed by signal 9 SIGKILL (out of memory?)'
    assert benchmark.failure_reason(3, '') == 'exited with status 3 and no message'


def test_conventional_dataset_serves_items_like_torchvision_cifar10():
    """torchvision's own CIFAR10.__getitem__, applied to our in-memory dataset, gives the same
    items under the same random state: the conventional pipeline is the original's."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    dataset = cifar.InMemoryCIFAR(data, [1, 2, 3, 4, 5, 6],
                                  transform=cifar.conventional_transform())
    for i in range(len(dataset)):
        torch.manual_seed(i)
        ours = dataset[i]
        torch.manual_seed(i)
        theirs = datasets.CIFAR10.__getitem__(dataset, i)
        assert torch.equal(ours[0], theirs[0]) and ours[1] == theirs[1]
        assert ours[0].shape == (3, 32, 32) and ours[0].dtype == torch.float32
    plain = cifar.InMemoryCIFAR(data, [0] * 6)
    assert np.array_equal(np.asarray(plain[2][0]), data[2])
    names = [type(t).__name__ for t in cifar.conventional_transform().transforms]
    assert names == ['RandomCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize']


# ----------------------------------------------------------------------------- make gpu-check

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without a GPU')
def test_gpu_check_without_a_gpu_says_so_in_one_line(tmp_path, capsys):
    assert gpu_check.main(['--out', str(tmp_path / 'out')]) == 1
    out, err = capsys.readouterr()
    assert out == '' and 'no CUDA GPU on this machine' in one_line(err)
    assert 'nothing was verified' in err and not (tmp_path / 'out').exists()


def test_gpu_check_summarises_what_its_steps_report(tmp_path, capsys, monkeypatch):
    """The whole of gpu_check.main on canned step outputs (the real ones need a GPU): what it
    parses from pytest, the benchmark JSON and the run's summary.csv, and the summary."""
    row = {'model': 'one_resnet-32', 'train_img_s': 25000.0, 'conventional_img_s': 5000.0,
           'vs_conventional': 5.0, 'eval_img_s': 100000.0, 'ratio_to_matmul': 0.05,
           'matmul_dtype': 'bfloat16', 'peak_memory_gib': 1.5}
    commands = []

    def run_logged(title, command, log, timeout, stop=signal.SIGKILL):
        commands.append((command, timeout, stop))
        if '-m' in command:  # pytest
            return 0, 95.0, ('....s\nSKIPPED [1] tests/test_benchmark.py:90: checks the refusal '
                             'on a machine without a GPU\n40 passed, 1 skipped in 95.0s\n'), False
        if 'benchmark.py' in command:
            with open(command[command.index('--json') + 1], 'w') as f:
                json.dump({'results': [row]}, f)
            return 0, 60.0, '', False
        folder = command[command.index('-c') + 1]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, 'summary.csv'), 'w') as f:
            f.write('epoch,seconds,test_acc_1,test_acc_ens\n1,7.5,85.0,86.0\n2,1.0,88.5,89.25\n'
                    '3,1.2,89.0,90.0\n')
        (tmp_path / 'out' / 'fashion-one-32' / 'log.txt').write_text('log')
        return 143, 80.0, 'stopped by signal 15', True  # stopped at the budget's end: the plan

    monkeypatch.setattr(gpu_check.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(gpu_check, 'describe_gpu', lambda: 'Fake GPU x1')
    monkeypatch.setattr(gpu_check, 'run_logged', run_logged)
    assert gpu_check.main(['--out', str(tmp_path / 'out')]) == 0
    out = capsys.readouterr().out
    assert 'gpu-check summary: Fake GPU x1' in out and 'gpu-check: all that ran passed' in out
    assert 'PASS  CUDA tests: 40 passed, 1 skipped in 95 s' in out
    assert 'skipped: checks the refusal on a machine without a GPU' in out
    assert out.count('one_resnet-32   train    25000 img/s (5.00x conventional)') == 2
    # 300 x (50k / 25k + 10k / 100k) s = 630 s
    assert out.count('300 CIFAR epochs ~10.5 min') == 2
    # epochs 2-3 at a median 1.1 s: (9.7 + 297 x 1.1) s = 5.61 min; x 50k / 60k = 4.68 min
    assert '3 of 300 epochs, 1.10 s/epoch (epoch 1 7.50 s)' in out
    assert 'branch 1 89.00%, ensemble 90.00%; 300 epochs ~5.6 min (~4.7 min at CIFAR' in out
    saved = json.loads((tmp_path / 'out' / 'gpu-check.json').read_text())
    assert saved['passed'] and saved['fashion']['epoch_seconds'] == [7.5, 1.0, 1.2]
    assert (tmp_path / 'out' / 'fashion-log.txt').read_text() == 'log'
    # the budget: the tests get at most 40% of 12 minutes; the run is stopped by SIGTERM
    # (which saves) before the budget's end, leaving it time to exit
    (tests, tests_limit, _), *_, (run, run_limit, run_stop) = commands
    assert tests_limit <= gpu_check.TESTS_SHARE * 12 * 60 and run_stop == signal.SIGTERM
    assert '--epochs' in run and run[run.index('--epochs') + 1] == '300'
    assert run_limit <= 12 * 60 - gpu_check.STOP_GRACE

    monkeypatch.setattr(gpu_check, 'run_logged',
                        lambda *a, **k: (1, 1.0, 'Traceback\nValueError: no\n', False))
    assert gpu_check.main(['--out', str(tmp_path / 'out')]) == 1
    out = capsys.readouterr().out
    assert 'FAIL  CUDA tests' in out and ': ValueError: no' in out and 'gpu-check: FAILED' in out


def test_gpu_check_skips_what_its_budget_cannot_hold(tmp_path, capsys, monkeypatch):
    """72 s: no room for the tests or a benchmark beside the run's 60 s; the run gets what is
    left. --skip leaves a check out."""
    commands = []
    monkeypatch.setattr(gpu_check.torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(gpu_check, 'describe_gpu', lambda: 'Fake GPU x1')
    monkeypatch.setattr(gpu_check, 'run_logged',
                        lambda title, command, *a, **k: commands.append(command) or (1, 1, 'x', False))
    assert gpu_check.main(['--out', str(tmp_path / 'out'), '--budget-minutes', '1.2']) == 1
    out = capsys.readouterr().out
    assert f'SKIP  CUDA tests: the CUDA tests take ~{gpu_check.TESTS_SECONDS} s' in out
    assert f'SKIP  benchmark --fast: takes ~{2 * gpu_check.SECONDS_PER_MODEL} s' in out
    assert 'SKIP  benchmark default flags' in out
    assert len(commands) == 1 and 'cifar_one.py' in commands[0][1]
    commands.clear()
    assert gpu_check.main(['--out', str(tmp_path / 'out'), '--budget-minutes', '4', '--skip',
                           'tests', 'run']) == 1
    out = capsys.readouterr().out
    assert 'SKIP  CUDA tests: --skip' in out and 'SKIP  Fashion-MNIST one_resnet-32 --fast: --skip' in out
    # 4 minutes without the run's reserve: both benchmarks, the four models each
    assert [c[c.index('--models') + 1:c.index('--steps')] for c in commands] == [gpu_check.ALL_MODELS] * 2


def test_every_network_and_one_over_it_can_be_measured(tmp_path):
    """Any -a network by ARCH-DEPTH at its paper's width, ONE over it as one_ARCH, and
    DenseNet's memory-efficient blocks by a flag (a DenseNet-BC-10, k = 40: seconds)."""
    out = tmp_path / 'bench.json'
    proc = run_benchmark('--models', 'densenet-10', 'one_densenet-10', '--memory-efficient',
                         '--batch', 8, '--test-batch', 10, '--steps', 1, '--repeats', 1,
                         '--warmup', 1, '--conventional-repeats', 0, '--matmul-size', 128,
                         '--threads', 1, '--json', out)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results['flags']['memory_efficient'] is True
    assert [r['model'] for r in results['results']] == ['densenet-10', 'one_densenet-10']
    assert all(r['train_img_s'] > 0 and r['peak_memory_gib'] > 0 for r in results['results'])

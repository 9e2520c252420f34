"""sweep.py with real runs of a real entry script: every run checked by its script's
--check-only before anything is submitted (one refusal submits nothing), and a 2x1 grid on the
local executor whose run SIGKILLed as it starts is resumed by the relaunch, the other skipped."""
import json
import os
import signal
import subprocess
import sys
import time

import cifar_baseline
import sweep
from conftest import ROOT, tiny
from sweep_helpers import FLAGS, SWEEP, TINY, status_lines, summary_epochs
from sweeps import grid
from utils.runlock import lock_holder

ANY_DEPTH = TINY[:2] + TINY[4:]   # TINY without its --depth 8, for a grid that varies it


def launch(root, data, *args, epochs=1, vary=()):
    cmd = [sys.executable, SWEEP, '--root', str(root), '--scripts', 'cifar_baseline.py',
           '--executor', 'local', *args, '--vary', *vary,
           '--', *TINY, '--data-dir', data, '--epochs', str(epochs)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f'sweep exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}')
    return proc


# ----------------------------------------------------------------------------- --check-only

def test_check_only_checks_like_a_run_and_writes_nothing(fashion_root, tmp_path, capsys):
    run = tmp_path / 'run'
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 1, '--check-only')) == 0
    assert capsys.readouterr().out.strip() == (f'check-only: would start a new run in {run} '
                                               'at epoch 1')
    assert not run.exists()
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 1, '--train-subset', 128)) == 0
    files = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    capsys.readouterr()
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 2, '--train-subset', 128,
                                    '--resume', 'auto', '--check-only')) == 0
    assert capsys.readouterr().out.strip() == (
        f'check-only: would resume {run}/checkpoint.pth.tar at epoch 2, batch 0')
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 2, '--check-only')) == 2
    assert 'already holds a run' in capsys.readouterr().err       # no --resume: refused
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == files
    # This machine's GPUs say nothing about the run's: left to the run itself.
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'gpu', '--epochs', 1, '--gpu-id', '3',
                                    '--cuda-graphs', '--check-only')) == 0


def test_every_run_is_checked_and_one_refusal_submits_nothing(fashion_root, tmp_path,
                                                              monkeypatch, capsys):
    """Values no script takes (a depth, a float, data that is not Fashion-MNIST): every run
    the scripts refuse is listed in one line, and nothing is submitted or written."""
    corrupt = tmp_path / 'corrupt'
    raw = corrupt / 'FashionMNIST' / 'raw'
    raw.mkdir(parents=True)
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte',
                 't10k-labels-idx1-ubyte'):
        (raw / name).write_bytes(os.urandom(4096))
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.chdir(ROOT)
    root = tmp_path / 'grid'
    assert sweep.main(['--root', str(root), '--scripts', 'cifar_baseline.py', '--executor',
                       'local', '--vary', 'depth=8,7', 'lr=0.1,abc',
                       f'data-dir={fashion_root},{corrupt}', '--', *ANY_DEPTH,
                       '--epochs', '1']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ('sweep.py: error: 7 of 8 runs would be refused (listed above): nothing '
                       'was submitted')
    refused = dict(line.split(': ', 1) for line in err[:-1])
    assert len(refused) == 7 and all(k.startswith('refused  cifar_baseline/') for k in refused)
    for name, line in refused.items():
        if 'lr=abc' in name:
            assert line == ("cifar_baseline.py: error: argument --lr/--learning-rate: invalid "
                            "float value: 'abc' (see --help)"), line
        elif 'depth=7' in name:
            assert line.startswith('cifar_baseline.py: error: --depth: depth must be 6n+2'), line
        else:
            assert 'corrupt' in name and 'fashionmnist is missing or corrupt' in line, line
    assert not root.exists()


# ----------------------------------------------------------------------------- real runs

def test_local_grid_runs_resumes_a_killed_run_then_skips(fashion_root, tmp_path, capsys,
                                                          monkeypatch):
    """A 2x1 grid on the local executor, one run SIGKILLed as it starts; the relaunch resumes
    that one from its checkpoint and skips the other; a third launch skips them both."""
    root = tmp_path / 'grid'
    vary = ['lr=0.1,0.05', 'manualSeed=1']
    folders = [root / 'cifar_baseline' / f'lr={lr}' / 'manualSeed=1' for lr in ('0.1', '0.05')]
    victim = folders[0]
    cmd = [sys.executable, SWEEP, '--root', str(root), '--scripts', 'cifar_baseline.py',
           '--executor', 'local', '--max-parallel', '2', '--vary', *vary,
           '--', *TINY, '--data-dir', fashion_root, '--epochs', '2']
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline, holder = time.time() + 120, None
    while not (holder and holder.get('pid')):
        holder = lock_holder(str(victim))    # taken before the engine writes status.json
        time.sleep(0.01)
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
    while not (victim / 'status.json').exists():
        time.sleep(0.01)                     # 'running' at epoch 0: a checkpoint is saved
        assert time.time() < deadline
    os.kill(holder['pid'], signal.SIGKILL)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1, out
    assert out.count('] done ') == 1 and '] interrupted ' in out, out
    row = [l for l in status_lines(root, capsys) if 'lr=0.1/manualSeed=1' in l][0]
    assert row.startswith('interrupted') and 'killed by SIGKILL' in row, row

    second = launch(root, fashion_root, '--max-parallel', '2', vary=vary, epochs=2)
    assert '1 to run' in second.stdout and second.stdout.count('skip (done)') == 1, second.stdout
    manifest = {r['name']: r for r in json.loads((root / 'sweep.json').read_text())['runs']}
    assert sorted(manifest) == sorted(str(f.relative_to(root)) for f in folders)
    log = open(manifest['cifar_baseline/lr=0.1/manualSeed=1']['log']).read()
    assert 'Resuming' in log and '--resume auto' in log   # continued, not restarted
    for folder in folders:
        assert summary_epochs(folder) == [1, 2]
        assert json.loads((folder / 'status.json').read_text())['state'] == 'done'

    # The same launch once more (in this process, the scripts' flags given: no --help run).
    logs = sorted(os.listdir(root / 'jobs'))
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.chdir(ROOT)
    capsys.readouterr()
    assert sweep.main(cmd[2:]) == 0
    third = capsys.readouterr().out
    assert '0 to run' in third and third.count('skip (done)') == 2, third
    assert sorted(os.listdir(root / 'jobs')) == logs          # nothing was submitted
    assert [l.split()[0] for l in status_lines(root, capsys)[2:]] == ['done'] * 2

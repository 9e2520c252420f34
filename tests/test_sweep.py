"""sweep.py: the grid, its folders and commands, the checks before anything is submitted,
--dry-run, --status, one-line errors, the local executor with real runs (skip when done, resume
after SIGKILL, Ctrl-C and SIGTERM), the job's endings, and the SLURM path on stand-ins for its
commands (tests/test_slurm.py runs it on a real SLURM)."""
import csv
import getpass
import importlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from itertools import product
from types import SimpleNamespace

import pytest
import submitit
import torch
from submitit.core.utils import DelayedSubmission

import cifar_baseline
import sweep
from sweeps import cli, grid, pack, state
from sweeps.check import check_one
from sweeps.job import RunJob
from conftest import ROOT, tiny
from methods import METHODS
from utils.cli import build_parser
from utils.errors import UserError
from utils.runlock import lock_holder

SWEEP = os.path.join(ROOT, 'sweep.py')
TINY = ['-d', 'fashionmnist', '--depth', '8', '--train-batch', '64', '--test-batch', '100',
        '--train-subset', '256']
ANY_DEPTH = TINY[:2] + TINY[4:]   # TINY without its --depth 8, for a grid that varies it
ALIASES = {'-d': '--dataset', '--wd': '--weight-decay', '-c': '--checkpoint'}
BASELINE_FLAGS = {flag: ALIASES.get(flag, flag) for flag in (
    '-d', '--dataset', '--depth', '--epochs', '--lr', '--manualSeed', '-c', '--resume',
    '--schedule', '--wd', '--weight-decay', '--train-batch', '--test-batch', '--train-subset',
    '--data-dir', '--check-only', '--seeds')}   # as grid.help_flags reads a script's --help
ONE_FLAGS = BASELINE_FLAGS | {'--num-branches': '--num-branches', '--temperature': '--temperature'}
FLAGS = {'cifar_baseline.py': BASELINE_FLAGS, 'cifar_one.py': ONE_FLAGS}


def make_grid(root, scripts, vary, fixed=()):
    axes, groups = grid.parse_vary(vary), grid.split_fixed(list(fixed))
    return grid.expand(str(root), scripts, axes, groups, {s: FLAGS[s] for s in scripts}, ROOT)


def launch(root, data, *args, epochs=1, vary=()):
    cmd = [sys.executable, SWEEP, '--root', str(root), '--scripts', 'cifar_baseline.py',
           '--executor', 'local', *args, '--vary', *vary,
           '--', *TINY, '--data-dir', data, '--epochs', str(epochs)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f'sweep exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}')
    return proc


def summary_epochs(folder):
    with open(os.path.join(folder, 'summary.csv')) as f:
        return [int(row['epoch']) for row in csv.DictReader(f)]


def status_lines(root, capsys):
    capsys.readouterr()
    assert sweep.main(['--root', str(root), '--status']) == 0
    return capsys.readouterr().out.splitlines()


def write_status(folder, state, epoch, epochs, message=''):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'status.json'), 'w') as f:
        json.dump({'state': state, 'epoch': epoch, 'epochs': epochs, 'message': message,
                   'host': 'h', 'pid': 1, 'updated': '2025-01-01T00:00:00+00:00'}, f)


# ----------------------------------------------------------------------------- the grid

def test_grid_folders_and_commands_are_deterministic(tmp_path):
    vary = ['num-branches=1,2', 'manualSeed=0,1']
    fixed = ['--epochs', '300', '--schedule', '151', '225', '--temperature', '3']
    runs = make_grid(tmp_path, ['cifar_one.py', 'cifar_baseline.py'], vary, fixed)
    assert runs == make_grid(tmp_path, ['cifar_one.py', 'cifar_baseline.py'], vary, fixed)
    # the baseline has no --num-branches: that axis (and --temperature) is left out for it
    assert [r['name'] for r in runs] == [
        'cifar_one/num-branches=1/manualSeed=0', 'cifar_one/num-branches=1/manualSeed=1',
        'cifar_one/num-branches=2/manualSeed=0', 'cifar_one/num-branches=2/manualSeed=1',
        'cifar_baseline/manualSeed=0', 'cifar_baseline/manualSeed=1']
    one, base = runs[3], runs[5]
    assert one['folder'] == os.path.join(str(tmp_path), 'cifar_one', 'num-branches=2',
                                         'manualSeed=1')
    assert one['argv'][0] == sys.executable
    assert one['argv'][1:] == [os.path.join(ROOT, 'cifar_one.py'), '--epochs', '300', '--schedule',
                               '151', '225', '--temperature', '3', '--num-branches', '2',
                               '--manualSeed', '1', '-c', one['folder'], '--resume', 'auto']
    assert '--temperature' not in base['argv'] and '--num-branches' not in base['argv']
    assert base['argv'][-4:] == ['-c', base['folder'], '--resume', 'auto']
    assert one['epochs'] == base['epochs'] == 300


def test_grid_refusals(tmp_path):
    with pytest.raises(UserError, match='NAME=V1,V2'):
        grid.parse_vary(['depth'])
    with pytest.raises(UserError, match='sets -c'):
        grid.split_fixed(['--resume', 'x'])
    with pytest.raises(UserError, match='sets -c'):
        grid.parse_vary(['checkpoint=a,b'])
    axes, groups = grid.parse_vary(['depthh=8']), grid.split_fixed(['--epochs', '1'])
    with pytest.raises(UserError, match='--depthh is not a flag of cifar_baseline.py'):
        grid.check_flags_known(axes, groups, {'cifar_baseline.py': BASELINE_FLAGS})
    with pytest.raises(UserError, match='share the folder'):
        make_grid(tmp_path, ['cifar_baseline.py'], ['lr=0.1 ,0.1'])
    with pytest.raises(UserError, match="schedule: value '151 \"225': No closing quotation"):
        make_grid(tmp_path, ['cifar_baseline.py'], ['schedule=151 "225'])


def test_a_flag_given_twice_is_refused(tmp_path, monkeypatch, capsys):
    """Every flag of a real entry script that takes a value, varied and given again under
    every pair of its spellings (after --, or varied twice): refused in one line naming it
    (--vary depth=8 -- --depth 14 built --depth 14 --depth 8, the last silently winning). Given
    twice after --, it is the user's own command line, passed on as it is."""
    parser = build_parser('', METHODS['one'])
    flags = grid.flags_of_help(parser.format_help())
    options = [a.option_strings for a in parser._actions if a.option_strings and a.nargs != 0
               and a.dest not in ('help', 'checkpoint', 'resume', 'init_from')]
    assert ['-d', '--dataset'] in options and ['--weight-decay', '--wd'] in options
    for spellings in options:
        option = next(s for s in spellings if s.startswith('--'))
        assert {flags[s] for s in spellings} == {option}
        for first, second in product(spellings, spellings):
            varied = grid.parse_vary([f'{first.lstrip("-")}=1,2'])
            twice = [(varied, grid.split_fixed([second, '3'])),
                     (varied, grid.split_fixed([f'{second}=3']))]
            if first != second:
                twice.append((varied + grid.parse_vary([f'{second.lstrip("-")}=3']), []))
            for axes, groups in twice:
                with pytest.raises(UserError, match=f'^{option} is given twice'):
                    grid.check_each_flag_once(axes, groups, {'cifar_one.py': flags})
    grid.check_each_flag_once(grid.parse_vary(['depth=8,14']),
                              grid.split_fixed(['--epochs', '1', '--epochs', '2']),
                              {'cifar_one.py': flags})

    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.chdir(ROOT)
    assert sweep.main(['--root', str(tmp_path / 'grid'), '--scripts', 'cifar_baseline.py',
                       '--dry-run', '--vary', 'depth=8', '--', '--depth', '14']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'sweep.py: error: --depth is given twice (--vary depth=8 and -- --depth 14): a run of '
        'cifar_baseline.py would get both, the last one silently winning; give it once (to vary '
        'it, drop it after --)']
    assert not (tmp_path / 'grid').exists()


# ----------------------------------------------------------------------------- --dry-run, --status

def test_dry_run_lists_runs_and_skips_done(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    checked = []
    monkeypatch.setattr(cli, 'check_runs', lambda runs, cwd: checked.extend(runs) or [])
    monkeypatch.chdir(ROOT)
    done = tmp_path / 'cifar_baseline' / 'depth=8'
    write_status(done, 'done', 2, 2)
    assert sweep.main(['--root', str(tmp_path), '--scripts', 'cifar_baseline.py', '--dry-run',
                       '--vary', 'depth=8,14', '--', '--epochs', '2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == '2 runs: 1 to run, 1 skipped'
    assert out[1] == f'skip (done)  {done}'
    other = tmp_path / 'cifar_baseline' / 'depth=14'
    assert out[2] == (f'start  {other}  {sys.executable} {ROOT}/cifar_baseline.py --epochs 2 '
                      f'--depth 14 -c {other} --resume auto')
    assert not (tmp_path / 'sweep.json').exists() and not other.exists()  # nothing written
    assert [r['name'] for r in checked] == ['cifar_baseline/depth=14']  # the run to start


def test_status_of_each_state(tmp_path, capsys):
    runs = make_grid(tmp_path, ['cifar_baseline.py'], ['manualSeed=0,1,2,3,4'], ['--epochs', '2'])
    state.update_manifest(str(tmp_path), runs)
    done, failed, running, killed, fresh = [r['folder'] for r in runs]
    write_status(done, 'done', 2, 2)
    with open(os.path.join(done, 'summary.csv'), 'w') as f:
        f.write('epoch,lr\n1,0.1\n2,0.1\n')
    write_status(failed, 'failed', 1, 2, 'RuntimeError: CUDA out of memory')
    write_status(killed, 'running', 0, 2)    # its epoch 1 is in summary.csv only
    with open(os.path.join(killed, 'summary.csv'), 'w') as f:
        f.write('epoch,lr\n1,0.1\n')
    write_status(running, 'running', 1, 2)
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nfrom utils.runlock import hold_run_lock\n'
         'with hold_run_lock(sys.argv[1]):\n    print("locked", flush=True)\n    time.sleep(60)',
         running], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        lines = status_lines(tmp_path, capsys)
    finally:
        holder.kill()
        holder.wait()
    assert lines[0] == (f'{tmp_path}: 5 runs: 1 done, 1 running, 1 interrupted, 1 failed, '
                        '1 not started')
    rows = {next(w for w in line.split() if w.startswith('cifar_baseline/')): line
            for line in lines[2:]}
    assert rows['cifar_baseline/manualSeed=0'].split()[:2] == ['done', '2/2']
    assert rows['cifar_baseline/manualSeed=1'].split()[:2] == ['failed', '1/2']
    assert rows['cifar_baseline/manualSeed=1'].endswith('RuntimeError: CUDA out of memory')
    assert rows['cifar_baseline/manualSeed=2'].split()[:2] == ['running', '1/2']
    assert rows['cifar_baseline/manualSeed=2'].endswith(
        f'pid {holder.pid} on {socket.gethostname()}')
    assert rows['cifar_baseline/manualSeed=3'].split()[:2] == ['interrupted', '1/2']
    assert 'the process died' in rows['cifar_baseline/manualSeed=3']
    assert rows['cifar_baseline/manualSeed=4'].split()[:3] == ['not', 'started', '-/2']


def test_queued_in_the_scheduler_is_neither_resubmitted_nor_stale(fake_slurm, tmp_path, capsys):
    """Runs whose job squeue still lists (running, pending after a requeue) are skipped; the
    others are submitted. When squeue cannot answer, a launch submits nothing (one line) and
    --status says so and goes on from the files."""
    root = tmp_path / 'grid'
    launch = ['--root', str(root), '--scripts', 'cifar_baseline.py', '--gpus-per-run', '0',
              '--vary', 'manualSeed=0,1,2', '--', '--epochs', '2']
    assert sweep.main(launch) == 0
    fake_slurm.squeue('4242_0|RUNNING|None\n4242_1|PENDING|BeginTime\n77_0|PENDING|None')
    (fake_slurm.folder / 'submitted.sh').unlink()
    capsys.readouterr()
    assert sweep.main(launch) == 0
    out = capsys.readouterr().out
    assert 'skip (running)  cifar_baseline/manualSeed=0' in out
    assert 'skip (queued)  cifar_baseline/manualSeed=1  job 4242_1 PENDING (BeginTime)' in out
    assert '1 to run on slurm, 2 skipped' in out and 'submitted cifar_baseline/manualSeed=2' in out
    assert '--array' not in fake_slurm.submitted     # the one run left: one job
    rows = {next(w for w in line.split() if w.startswith('cifar_baseline/')): line.split()
            for line in status_lines(root, capsys)[2:]}
    assert rows['cifar_baseline/manualSeed=1'][:2] == ['queued', '-/2']
    assert rows['cifar_baseline/manualSeed=0'][:2] == ['running', '-/2']

    fake_slurm.fail('squeue', 'slurm_load_jobs error: Unable to contact slurm controller')
    (fake_slurm.folder / 'submitted.sh').unlink()
    assert sweep.main(launch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'sweep.py: error: squeue --noheader --array --user {getpass.getuser()} '
                   '--format \'%i|%T|%r\' failed: slurm_load_jobs error: Unable to contact slurm '
                   f'controller: cannot tell which runs of {root} SLURM still holds, so '
                   'nothing is submitted (launch where squeue answers)']
    assert fake_slurm.submitted is None
    assert sweep.main(['--root', str(root), '--status']) == 0
    assert 'the states below ignore what SLURM still holds' in capsys.readouterr().err


def test_impossible_slurm_resources_are_refused_before_sbatch(fake_slurm, tmp_path, capsys):
    """sinfo's nodes decide: no GPU, too few CPUs or too little memory, or no such partition,
    is one line naming the flag to change; a refused sbatch leaves the root as it was."""
    root = tmp_path / 'grid'
    launch = ['--root', str(root), '--scripts', 'cifar_baseline.py', '--vary', 'manualSeed=0',
              '--', '--epochs', '2']
    fake_slurm.sinfo('debug*|2|4000|(null)')
    cases = [([], '--gpus-per-run 1 (the default): no node of partition debug has a GPU (sinfo '
                  'lists no gpu GRES); to run on CPUs pass --gpus-per-run 0'),
             (['--gpus-per-run', '0'], '--cpus-per-run 4 (the default): the largest node of '
              'partition debug has 2 CPUs; pass --cpus-per-run 2 or fewer'),
             (['--gpus-per-run', '0', '--cpus-per-run', '2', '--mem-gb', '8'],
              '--mem-gb 8: the largest node of partition debug has 4000 MB; pass --mem-gb 3 or '
              'less'),
             (['--partition', 'gpu'], '--partition gpu: sinfo lists no such partition (there are: '
                                      'debug)')]
    for flags, message in cases:
        assert sweep.main(launch[:6] + flags + launch[6:]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f'sweep.py: error: {message}']
    fake_slurm.sinfo('cpu*|64|256000|(null)\ngpu|16|128000|gpu:a100:4(S:0-1)')
    assert sweep.main(launch[:6] + ['--partition', 'gpu', '--cpus-per-run', '32']
                      + launch[6:]) == 2
    assert 'the largest GPU node of partition gpu has 16 CPUs' in capsys.readouterr().err
    assert not root.exists() and fake_slurm.submitted is None

    fake_slurm.fail('sbatch', 'sbatch: error: Batch job submission failed: Invalid generic '
                              'resource (gres) specification')
    assert sweep.main(launch[:6] + ['--partition', 'gpu'] + launch[6:]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('sweep.py: error: sbatch refused the job array: ') and \
        'Invalid generic resource' in line
    assert not root.exists()                         # no sweep.json, no jobs/ left behind


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


def test_an_unwritable_root_or_a_damaged_manifest_is_one_line(fake_slurm, tmp_path, capsys):
    a_file = tmp_path / 'a-file'
    a_file.write_text('not a folder\n')
    launch = ['--scripts', 'cifar_baseline.py', '--vary', 'manualSeed=0', '--', '--epochs', '1']
    roots = [(a_file / 'grid', 'local'), (a_file, 'local'), (a_file / 'grid', 'slurm')]
    readonly = tmp_path / 'readonly'
    readonly.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', str(readonly)],
                             capture_output=True).returncode == 0
    if mounted:                                       # a real read-only filesystem
        roots += [(readonly / 'grid', 'local'), (readonly / 'grid', 'slurm')]
    try:
        for root, executor in roots:   # --dry-run says what the launch would
            lines = []
            for dry_run in ([], ['--dry-run']):
                assert sweep.main(['--root', str(root), '--executor', executor,
                                   '--gpus-per-run', '0', *dry_run, *launch]) == 2, root
                lines += capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 2 and lines[0] == lines[1], lines
            assert lines[0].startswith(f'sweep.py: error: cannot create {root}: ') or \
                lines[0].startswith(f'sweep.py: error: cannot write into {root}: '), lines
            assert 'is a file, not a folder' in lines[0] or 'Read-only' in lines[0], lines
    finally:
        if mounted:
            subprocess.run(['umount', '-l', str(readonly)], check=False)
    assert a_file.read_text() == 'not a folder\n'

    root = tmp_path / 'grid'
    root.mkdir()
    for content in ('{"runs": [{"name": 5}]}', '{"runs": "x"}', '[1]', '{',
                    '{"runs": [{"name": "a", "epochs": "2"}]}',
                    '{"runs": [{"name": "a", "job": 3}]}'):
        (root / 'sweep.json').write_text(content)
        for argv in (['--status'], launch):
            assert sweep.main(['--root', str(root), *argv]) == 2, (content, argv)
            (line,) = capsys.readouterr().err.strip().splitlines()
            assert line.startswith(f'sweep.py: error: {root}/sweep.json is not a sweep manifest')
        assert (root / 'sweep.json').read_text() == content     # never replaced
    (root / 'sweep.json').write_text('{"runs": []}')
    assert sweep.main(['--root', str(root), '--status']) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f'sweep.py: error: {root}/sweep.json lists no runs: pass the '), line


@pytest.mark.parametrize('flags, message', [
    (['--time', '-5'], 'argument --time: must be at least 1, got -5'),
    (['--max-parallel', '-1'], 'argument --max-parallel: must be at least 1, got -1'),
    (['--max-parallel', '0'], 'argument --max-parallel: must be at least 1, got 0'),
    (['--cpus-per-run', '0'], 'argument --cpus-per-run: must be at least 1, got 0'),
    (['--signal-delay', '-1'], 'argument --signal-delay: must be at least 0, got -1'),
    (['--mem-gb', 'x'], "argument --mem-gb: expected a whole number, got 'x'"),
])
def test_numbers_are_checked(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        sweep.main(['--root', str(tmp_path), '--scripts', 'cifar_baseline.py', *flags])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f'sweep.py: error: {message} (see --help)']


def test_the_signal_delay_leaves_the_job_time_to_run(tmp_path, capsys):
    """--executor local --time 1 with the default delay of 120 s would never signal the job
    before its limit (so it was stopped there and not requeued): the default is at most half
    the limit, and a delay not shorter than the limit is refused."""
    for time_min, executor, delay in ((1, 'local', 30), (3, 'slurm', 90), (None, 'local', 120),
                                      (None, 'slurm', 120), (60, 'local', 120)):
        opts = SimpleNamespace(time=time_min, signal_delay=None)
        cli.set_signal_delay(opts, executor)
        assert opts.signal_delay == delay
    assert sweep.main(['--root', str(tmp_path), '--scripts', 'cifar_baseline.py', '--executor',
                       'local', '--time', '1', '--signal-delay', '60']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'sweep.py: error: --signal-delay 60 is not shorter than the time limit of 1 min (60 s): '
        'the job would never be told to save before it; pass a smaller --signal-delay or a '
        'longer --time']


def test_help_keeps_the_examples_line_breaks_and_names_the_job_logs(capsys):
    with pytest.raises(SystemExit):
        sweep.main(['--help'])
    out = capsys.readouterr().out.splitlines()
    i = out.index('    python sweep.py --root checkpoints/paper --scripts cifar_baseline.py '
                  'cifar_one.py \\')
    assert out[i + 1].startswith('        --vary dataset=cifar10,cifar100 depth=32,110')
    readme = open(os.path.join(ROOT, 'docs', 'SCALE.md')).read()
    for text in ('\n'.join(out), readme):   # what tests/test_slurm.py finds on a real SLURM
        assert 'ROOT/jobs/ARRAYID_TASK_0_log.out' in text and 'JOBID_0_log.out' in text


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


FAKE_RUN = """import os, signal, sys, time
checkpoint = os.path.join(sys.argv[1], 'checkpoint')
if os.path.exists(checkpoint):
    print('Resuming from', open(checkpoint).read(), flush=True)
    sys.exit(0)
def stop(signum, frame):
    os.makedirs(sys.argv[1], exist_ok=True)
    open(checkpoint, 'w').write('batch 7')
    print('saved', file=sys.stderr, flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
print('training', flush=True)
time.sleep(60)
"""


def fake_run_job(tmp_path):
    script = tmp_path / 'fake_run.py'
    script.write_text(FAKE_RUN)
    run = {'name': 'fake/run', 'folder': str(tmp_path / 'run'),
           'argv': [sys.executable, str(script), str(tmp_path / 'run')]}
    return RunJob(run, str(tmp_path), env={'OMP_NUM_THREADS': '1'}, stop_timeout_s=20)


def test_run_job_checkpoint_stops_child_and_resubmits_itself(tmp_path):
    """submitit's handler of SIGUSR2 (time limit) calls checkpoint(): the child, which ignores
    SIGUSR2 itself, is stopped with SIGTERM, and a fresh copy of the job is returned."""
    job, seen = fake_run_job(tmp_path), {}

    def preempt():
        deadline = time.time() + 30
        while job._proc is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        job._proc.send_signal(signal.SIGUSR2)
        time.sleep(0.3)
        seen['alive after SIGUSR2'] = job._proc.poll() is None
        seen['delayed'] = job.checkpoint()
    thread = threading.Thread(target=preempt)
    thread.start()
    with pytest.raises(SystemExit) as stopped:
        job()
    assert stopped.value.code == 143
    thread.join(timeout=30)
    assert seen['alive after SIGUSR2']
    delayed = seen['delayed']
    assert isinstance(delayed, DelayedSubmission) and delayed.function is not job
    assert delayed.function.argv == job.argv and delayed.function._proc is None
    outcome = json.loads(open(state.outcome_path(str(tmp_path), 'fake/run')).read())
    assert outcome['state'] == 'preempted' and outcome['message'].endswith('saved')


ENDS = """import sys
if sys.argv[1] != '0':
    print('cifar_x.py: error: run folder is in use by pid 7 on host h', file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def ending_job(tmp_path, code):
    script = tmp_path / 'ends.py'
    script.write_text(ENDS)
    run = {'name': 'fake/run', 'folder': str(tmp_path / 'run'),
           'argv': [sys.executable, str(script), str(code)]}
    return RunJob(run, str(tmp_path), env={'OMP_NUM_THREADS': '1'}, stop_timeout_s=20)


def test_a_job_ends_in_one_line_and_a_finished_run_is_never_requeued(tmp_path, capfd):
    """Done or failed (e.g. refused: another job holds the folder), the job's own output ends
    with one line, never a traceback; the time-limit signal arriving after the run has ended
    ends the job as it is instead of requeueing it."""
    job = ending_job(tmp_path, 0)
    assert job() == {'name': 'fake/run', 'folder': str(tmp_path / 'run')}
    assert capfd.readouterr().err.splitlines()[-1] == 'sweep: fake/run: done'
    with pytest.raises(SystemExit) as ended:
        job.checkpoint()                             # the signal, just too late: no requeue
    assert ended.value.code == 0
    outcome = json.loads(open(state.outcome_path(str(tmp_path), 'fake/run')).read())
    assert outcome['state'] == 'done'

    job = ending_job(tmp_path, 2)
    with pytest.raises(SystemExit) as ended:
        job()
    assert ended.value.code == 2
    assert capfd.readouterr().err.splitlines()[-1] == (
        'sweep: fake/run: failed (cifar_x.py: error: run folder is in use by pid 7 on host h)')
    with pytest.raises(SystemExit) as ended:
        job.checkpoint()
    assert ended.value.code == 2

    # Through submitit's local executor: the job's log ends on that line.
    executor = submitit.LocalExecutor(folder=str(tmp_path / 'jobs'))
    executor.update_parameters(timeout_min=5, stderr_to_stdout=True)
    submitted = executor.submit(ending_job(tmp_path, 2))
    deadline = time.time() + 120
    while not submitted.done():
        assert time.time() < deadline
        time.sleep(0.1)
    log = open(submitted.paths.stdout).read()
    assert 'Traceback' not in log, log
    assert log.strip().splitlines()[-1] == ('sweep: fake/run: failed (cifar_x.py: error: run '
                                            'folder is in use by pid 7 on host h)')


def test_ctrl_c_and_sigterm_stop_a_local_sweep_in_one_line(fashion_root, tmp_path, capsys):
    """Ctrl-C (SIGINT to the terminal's whole process group), then SIGTERM to sweep.py alone:
    each time the run saves and stops, sweep.py says so in one line and exits 128+N, and no
    process prints a traceback; each launch continues where the last stopped."""
    root = tmp_path / 'grid'
    folder = root / 'cifar_baseline' / 'lr=0.1'
    cmd = [sys.executable, SWEEP, '--root', str(root), '--scripts', 'cifar_baseline.py',
           '--executor', 'local', '--vary', 'lr=0.1', '--', *TINY, '--data-dir', fashion_root,
           '--epochs', '100', '--train-subset', '128']
    for signum, epoch in ((signal.SIGINT, 1), (signal.SIGTERM, 2)):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        deadline = time.time() + 180
        while len(summary_epochs(folder) if (folder / 'summary.csv').exists() else []) < epoch:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.02)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)   # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=180)
        name = signal.Signals(signum).name
        assert proc.returncode == 128 + signum, (out, err)
        assert 'Traceback' not in out + err, (out, err)
        assert err.strip().splitlines() == [f'sweep.py: stopped by {name}: the runs saved a '
                                            'checkpoint and stopped; run the same command to '
                                            'continue'], err
        manifest = json.loads((root / 'sweep.json').read_text())
        log = open(manifest['runs'][0]['log']).read()
        assert 'Traceback' not in log, log
        last = [l for l in log.splitlines() if not l.startswith('submitit ')][-1]
        assert last.startswith('sweep: cifar_baseline/lr=0.1: stopped (cifar_baseline.py: '
                               'stopped by signal '), log
        row = [l for l in status_lines(root, capsys) if 'lr=0.1' in l][0].split()
        assert row[0] == 'preempted' and int(row[1].split('/')[0]) >= epoch, row


def test_local_time_limit_requeues_and_continues(tmp_path, monkeypatch):
    """Through submitit itself: near the time limit the job is signalled, stops its run,
    requeues, and the requeued job continues from the run's checkpoint."""
    monkeypatch.setenv('PYTHONPATH', ROOT)             # the job process imports sweeps
    executor = submitit.LocalExecutor(folder=str(tmp_path / 'jobs'), max_num_timeout=5)
    executor.update_parameters(timeout_min=0.1, signal_delay_s=3, stderr_to_stdout=True)
    job = executor.submit(fake_run_job(tmp_path))      # SIGUSR2 after 3 s
    assert job.result() == {'name': 'fake/run', 'folder': str(tmp_path / 'run')}
    log = open(job.paths.stdout).read()
    assert 'training' in log and 'saved' in log and 'Resuming from batch 7' in log, log
    outcome = json.loads(open(state.outcome_path(str(tmp_path), 'fake/run')).read())
    assert outcome['state'] == 'done'


# ----------------------------------------------------------------------------- SLURM

class FakeSlurm:
    """Stand-ins for srun, sbatch, sinfo and squeue, first on the PATH: sbatch keeps the file
    it is given and answers job 4242; what sinfo and squeue print, or that they (or sbatch)
    fail, is set per test."""

    def __init__(self, folder):
        self.folder = folder
        self.sinfo('gpu*|8|64000|gpu:4')
        self.squeue('')
        for tool in ('srun', 'sbatch', 'sinfo', 'squeue'):
            answer = {'srun': 'exit 0',
                      'sbatch': f'cp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"'
                      }.get(tool, f'cat {folder}/{tool}.out')
            (folder / tool).write_text(
                f'#!/bin/sh\nif [ -e {folder}/{tool}.fail ]; then cat {folder}/{tool}.fail >&2; '
                f'exit 1; fi\n{answer}\n')
            (folder / tool).chmod(stat.S_IRWXU)

    def sinfo(self, text):
        (self.folder / 'sinfo.out').write_text(text + '\n')

    def squeue(self, text):
        (self.folder / 'squeue.out').write_text(text + '\n')

    def fail(self, tool, message):
        (self.folder / f'{tool}.fail').write_text(message + '\n')

    @property
    def submitted(self):
        path = self.folder / 'submitted.sh'
        return path.read_text() if path.exists() else None


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sweep.main in this process on a FakeSlurm, the scripts' flags given (no --help run) and
    every run passing its check."""
    folder = tmp_path / 'bin'
    folder.mkdir()
    monkeypatch.setenv('PATH', f'{folder}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))   # restored after
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.setattr(cli, 'check_runs', lambda runs, cwd: [])
    monkeypatch.chdir(ROOT)
    return FakeSlurm(folder)


def test_slurm_array_sbatch_file(fake_slurm, tmp_path, capsys):
    """The real submission path, with stand-ins for the SLURM commands."""
    root = tmp_path / 'grid'
    assert sweep.main(['--root', str(root), '--scripts', 'cifar_baseline.py',   # auto: srun found
                       '--vary', 'manualSeed=0,1,2', '--max-parallel', '2', '--partition', 'gpu',
                       '--time', '600', '--', '--epochs', '300']) == 0
    out = capsys.readouterr().out
    assert '3 to run on slurm' in out and 'job 4242_2' in out
    text = fake_slurm.submitted
    for line in ('#SBATCH --array=0-2%2', '#SBATCH --signal=USR2@120', '#SBATCH --requeue',
                 '#SBATCH --partition=gpu', '#SBATCH --time=600', '#SBATCH --gpus-per-node=1',
                 '#SBATCH --cpus-per-task=4', '#SBATCH --ntasks-per-node=1',
                 '#SBATCH --job-name=sweep-grid'):
        assert line in text.splitlines(), (line, text)
    assert '-m submitit.core._submit' in text
    manifest = json.loads((root / 'sweep.json').read_text())
    assert [r['job'] for r in manifest['runs']] == ['4242_0', '4242_1', '4242_2']
    job = DelayedSubmission.load(root / 'jobs' / '4242_1_submitted.pkl').function
    assert isinstance(job, RunJob) and type(job).__module__ == 'sweeps.job'
    folder = str(root / 'cifar_baseline' / 'manualSeed=1')
    assert job.argv[-4:] == ['-c', folder, '--resume', 'auto']


# ----------------------------------------------------------------------------- --pack

def write_checkpoint(folder, epoch, step):
    """What sweeps.pack.start_point reads of a checkpoint: its format, epoch and batch."""
    os.makedirs(folder, exist_ok=True)
    torch.save({'format': 1, 'epoch': epoch, 'step': step},
               os.path.join(folder, 'checkpoint.pth.tar'))


def test_pack_refusals_are_one_line(tmp_path, monkeypatch, capsys):
    def refused(vary, fixed=(), root=str(tmp_path), flags=FLAGS):
        axes, groups = grid.parse_vary(vary), grid.split_fixed(list(fixed))
        with pytest.raises(UserError) as e:
            pack.check_packable(root, axes, groups, flags)
        return str(e.value)
    assert 'vary it, e.g. --vary manualSeed=0,1,2,3' in refused(['lr=0.1,0.05'])
    assert 'manualSeed=3 is one run per group, nothing to pack' in refused(['manualSeed=3'])
    assert "value '07': write each seed as a plain whole number" in refused(['manualSeed=1,07'])
    assert 'holds {seed}' in refused(['manualSeed=1,2'], root='/runs/{seed}')
    assert 'sets each job\'s --seeds itself' in refused(['manualSeed=1,2'], ['--seeds', '3'])
    old = {'cifar_baseline.py': {k: v for k, v in BASELINE_FLAGS.items() if k != '--seeds'}}
    assert 'cifar_baseline.py has no --seeds flag' in refused(['manualSeed=1,2'], flags=old)

    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.chdir(ROOT)
    assert sweep.main(['--root', str(tmp_path / 'grid'), '--scripts', 'cifar_baseline.py',
                       '--pack', '--dry-run', '--vary', 'lr=0.1,0.05']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'sweep.py: error: --pack packs the runs that differ only by their seed: vary it, e.g. '
        '--vary manualSeed=0,1,2,3']
    assert not (tmp_path / 'grid').exists()


def test_pack_groups_the_runs_that_stand_together_and_never_submits_one_twice(
        fake_slurm, tmp_path, monkeypatch, capsys):
    """Seeds 0-6 of one group: 0 done is skipped; 1 and 2 (new) are one pack, 3 and 4 (both at
    the end of epoch 1) another, 5 (mid-epoch) and 6 (an unreadable checkpoint) run alone:
    every job checked, one array task each, each run's own entry in sweep.json; relaunched
    while SLURM holds them, nothing is submitted and --status shows each run."""
    root = tmp_path / 'grid'
    folder = {seed: root / 'cifar_baseline' / f'manualSeed={seed}' for seed in range(7)}
    write_status(folder[0], 'done', 2, 2)
    write_checkpoint(folder[3], 1, 0)
    write_checkpoint(folder[4], 1, 0)
    write_checkpoint(folder[5], 1, 7)
    folder[6].mkdir(parents=True)
    (folder[6] / 'checkpoint.pth.tar').write_bytes(b'not a checkpoint')
    launch = ['--root', str(root), '--scripts', 'cifar_baseline.py', '--pack',
              '--vary', 'manualSeed=0,1,2,3,4,5,6', '--', '--epochs', '2']
    checked = []
    monkeypatch.setattr(cli, 'check_runs', lambda jobs, cwd: checked.extend(jobs) or [])

    assert sweep.main(launch[:4] + ['--dry-run'] + launch[4:]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ['7 runs: 6 to run, 1 skipped', f'skip (done)  {folder[0]}']
    assert out[2] == f'start  {folder[1]}  in pack cifar_baseline/manualSeed={{1,2}}'
    assert out[4] == f'resume  {folder[3]}  in pack cifar_baseline/manualSeed={{3,4}}'
    assert out[6].startswith(f'resume  {folder[5]}  {sys.executable} ')
    template = root / 'cifar_baseline' / 'manualSeed={seed}'
    assert out[-2] == (f'pack  cifar_baseline/manualSeed={{1,2}}  {sys.executable} '
                       f'{ROOT}/cifar_baseline.py --epochs 2 --seeds 1 2 -c \'{template}\' '
                       '--resume auto')
    assert [job['name'] for job in checked] == [
        'cifar_baseline/manualSeed={1,2}', 'cifar_baseline/manualSeed={3,4}',
        'cifar_baseline/manualSeed=5', 'cifar_baseline/manualSeed=6']
    assert not (root / 'sweep.json').exists()

    assert sweep.main(launch) == 0
    out = capsys.readouterr().out
    assert '6 to run on slurm as 4 jobs (4 runs in 2 packs), 1 skipped' in out
    assert 'submitted cifar_baseline/manualSeed={3,4} (2 runs packed)  job 4242_1' in out
    assert '#SBATCH --array=0-3%4' in fake_slurm.submitted.splitlines()
    manifest = {r['name']: r.get('job') for r in
                json.loads((root / 'sweep.json').read_text())['runs']}
    assert manifest == {f'cifar_baseline/manualSeed={seed}': job for seed, job in (
        (0, None), (1, '4242_0'), (2, '4242_0'), (3, '4242_1'), (4, '4242_1'), (5, '4242_2'),
        (6, '4242_3'))}
    job = DelayedSubmission.load(root / 'jobs' / '4242_1_submitted.pkl').function
    assert job.argv[-7:] == ['--seeds', '3', '4', '-c', str(template), '--resume', 'auto']
    assert job.outcomes == [state.outcome_path(str(root), f'cifar_baseline/manualSeed={seed}')
                            for seed in (3, 4)]

    fake_slurm.squeue('4242_0|PENDING|Priority\n4242_1|RUNNING|None\n4242_2|PENDING|None\n'
                      '4242_3|PENDING|None')
    (fake_slurm.folder / 'submitted.sh').unlink()
    assert sweep.main(launch) == 0
    assert '0 to run on slurm, 7 skipped' in capsys.readouterr().out
    assert fake_slurm.submitted is None
    rows = [line.split()[:2] for line in status_lines(root, capsys)[2:]]
    assert rows == [['done', '2/2'], ['queued', '-/2'], ['queued', '-/2'], ['running', '-/2'],
                    ['running', '-/2'], ['queued', '-/2'], ['queued', '-/2']]


def checks_in_this_process(jobs, cwd):
    """sweeps.check's work (each job's script with --check-only) without a process per
    script: [(job, its refusal line)]."""
    refusals = []
    for job in jobs:
        script = importlib.import_module(os.path.splitext(os.path.basename(job['script']))[0])
        code, line = check_one(script.main, job['script'], job['argv'][2:])
        if code:
            refusals.append((job, line))
    return refusals


def sweep_in_this_process(monkeypatch):
    """sweep.main without the processes it starts before submitting: each script's --help
    read from its parser, each job checked by its script's main()."""
    def help_flags(script, cwd):
        name = os.path.splitext(os.path.basename(script))[0].replace('cifar_', '')
        return grid.flags_of_help(build_parser('', METHODS[name]).format_help())
    monkeypatch.setattr(grid, 'help_flags', help_flags)
    monkeypatch.setattr(cli, 'check_runs', checks_in_this_process)
    monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))   # restored after
    monkeypatch.setattr(sys, 'argv', list(sys.argv))                     # check_one sets it
    monkeypatch.chdir(ROOT)


def test_a_local_pack_trains_its_seeds_in_one_job_then_is_skipped(fashion_root, tmp_path,
                                                                   monkeypatch, capsys):
    """--pack on the local executor: seeds 1 and 2 train as one job (one process, --seeds 1 2),
    each in its own grid folder; --status shows both done; a relaunch skips them."""
    sweep_in_this_process(monkeypatch)
    root = tmp_path / 'grid'
    argv = ['--root', str(root), '--scripts', 'cifar_one.py', '--executor', 'local', '--pack',
            '--cpus-per-run', '1', '--vary', 'manualSeed=1,2', '--', *TINY,
            '--train-subset', '128', '--data-dir', fashion_root, '--epochs', '1']
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert '2 to run on local as 1 job (2 runs in 1 pack), 0 skipped' in out, out
    assert 'started  cifar_one/manualSeed={1,2} (2 runs packed)' in out, out
    runs = json.loads((root / 'sweep.json').read_text())['runs']
    assert [r['name'] for r in runs] == ['cifar_one/manualSeed=1', 'cifar_one/manualSeed=2']
    assert runs[0]['job'] == runs[1]['job'] and runs[0]['log'] == runs[1]['log']
    log = open(runs[0]['log']).read()
    assert '--seeds 1 2 -c' in log and '[seed 2] Epoch 1/1' in log, log
    for seed in (1, 2):
        folder = root / 'cifar_one' / f'manualSeed={seed}'
        assert summary_epochs(folder) == [1]
        assert json.loads((folder / 'args.json').read_text())['manualSeed'] == seed
    lines = status_lines(root, capsys)
    assert [line.split()[:3] for line in lines[2:]] == [
        ['done', '1/1', 'cifar_one/manualSeed=1'], ['done', '1/1', 'cifar_one/manualSeed=2']]

    logs = sorted(os.listdir(root / 'jobs'))
    assert sweep.main(argv) == 0
    out = capsys.readouterr().out
    assert '0 to run' in out and out.count('skip (done)') == 2, out
    assert sorted(os.listdir(root / 'jobs')) == logs                 # nothing was submitted

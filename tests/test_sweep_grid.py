"""sweep.py before anything runs: the grid, its folders and commands, a flag given twice,
--dry-run, --status of each state, and one-line errors (a root it cannot write, a damaged
sweep.json, sweep.py's own numbers). The rest of sweep.py: tests/test_sweep_runs.py (real
runs), test_sweep_stops.py (how a job ends), test_sweep_slurm.py, test_sweep_pack.py; what
they share is in tests/sweep_helpers.py."""
import os
import socket
import subprocess
import sys
from itertools import product
from types import SimpleNamespace

import pytest

import sweep
from conftest import ROOT
from methods import METHODS
from sweep_helpers import BASELINE_FLAGS, FLAGS, status_lines, write_status
from sweeps import cli, grid, state
from utils.cli import build_parser
from utils.errors import UserError


def make_grid(root, scripts, vary, fixed=()):
    axes, groups = grid.parse_vary(vary), grid.split_fixed(list(fixed))
    return grid.expand(str(root), scripts, axes, groups, {s: FLAGS[s] for s in scripts}, ROOT)


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
    flags = grid.parser_flags(parser)
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

"""sweep.py --pack (sweeps/pack.py): a grid point's seeds as one packed job; its one-line
refusals; which runs stand together in a pack (new ones, ones at the same epoch's end) and
which run alone; none submitted twice; a local pack's seeds trained in one job, then skipped."""
import json
import os
import sys

import pytest
import torch
from submitit.core.utils import DelayedSubmission

import sweep
from conftest import ROOT
from sweep_helpers import (BASELINE_FLAGS, FLAGS, TINY, status_lines, summary_epochs,
                           sweep_in_this_process, write_status)
from sweeps import cli, grid, pack, state
from utils.errors import UserError


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

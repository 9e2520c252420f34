"""What the sweep.py tests share (tests/test_sweep_*.py, and tests/test_slurm.py): the tiny
runs' flags, the flags each script's --help lists, status.json and --status written and read,
stand-ins for the SLURM commands (conftest.py's fake_slurm puts them first on the PATH), and
sweep.main without the processes it starts before submitting."""
import csv
import importlib
import json
import os
import stat
import sys

import sweep
from conftest import ROOT
from reproductions.columns import script_flags
from sweeps import cli, grid
from sweeps.check import check_one

SWEEP = os.path.join(ROOT, 'sweep.py')
TINY = ['-d', 'fashionmnist', '--depth', '8', '--train-batch', '64', '--test-batch', '100',
        '--train-subset', '256']
ALIASES = {'-d': '--dataset', '--wd': '--weight-decay', '-c': '--checkpoint'}
BASELINE_FLAGS = {flag: ALIASES.get(flag, flag) for flag in (
    '-d', '--dataset', '--depth', '--epochs', '--lr', '--manualSeed', '-c', '--resume',
    '--schedule', '--wd', '--weight-decay', '--train-batch', '--test-batch', '--train-subset',
    '--data-dir', '--check-only', '--seeds')}   # as grid.help_flags reads a script's --help
ONE_FLAGS = BASELINE_FLAGS | {'--num-branches': '--num-branches', '--temperature': '--temperature'}
FLAGS = {'cifar_baseline.py': BASELINE_FLAGS, 'cifar_one.py': ONE_FLAGS}


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


def checks_in_this_process(jobs, cwd):
    """sweeps.check's work (each job's script with --check-only) without a process per
    script: [(job, its refusal line)]. sys.argv, which check_one sets, is restored."""
    refusals, argv = [], list(sys.argv)
    try:
        for job in jobs:
            script = importlib.import_module(os.path.splitext(os.path.basename(job['script']))[0])
            code, line = check_one(script.main, job['script'], job['argv'][2:])
            if code:
                refusals.append((job, line))
    finally:
        sys.argv = argv
    return refusals


def sweep_in_this_process(monkeypatch):   # a test's monkeypatch, or a MonkeyPatch.context()
    """sweep.main without the processes it starts before submitting: each script's --help
    read from its parser (as reproduce.py reads it), each job checked by its script's main()."""
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: script_flags(script))
    monkeypatch.setattr(cli, 'check_runs', checks_in_this_process)
    monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))   # restored after
    monkeypatch.chdir(ROOT)

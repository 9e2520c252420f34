"""sweep.py on a real SLURM (scripts/slurm_local.sh start: Debian's slurmctld, slurmd and
munge on this machine): a grid is one job array; a relaunch submits nothing SLURM still holds,
skips what is done and starts what is new; `scontrol requeue` of a running run resumes it at
its exact batch, bitwise the uninterrupted run; scancel of an array, then a relaunch, resumes
one run and starts the other; a run no node can hold, or a value or run folder a script
refuses, is refused before sbatch; under --pack the seeds of a group train as one array task.
Tiny runs (depth 8, a few hundred generated Fashion-MNIST
images, one CPU).

Skipped, with the reason, where no SLURM answers; with ONE_REQUIRE_SLURM=1 (set by .ci/run)
that is a failure instead. scripts/slurm_local.sh configures a requeued job to wait 10 s before
it starts again (AuthInfo=cred_expire, 120 s by default), so the requeue test takes ~40 s.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import cifar_baseline
from conftest import ROOT, assert_same_run
from sweep import main as sweep_main
from sweep_helpers import sweep_in_this_process

SWEEP = os.path.join(ROOT, 'sweep.py')
REQUIRE = 'ONE_REQUIRE_SLURM'
CPU = ['--executor', 'slurm', '--gpus-per-run', '0', '--cpus-per-run', '1']
TINY = ['-d', 'fashionmnist', '--depth', '8', '--train-batch', '16', '--test-batch', '100',
        '--train-subset', '512', '--manualSeed', '1']
SLOW = ['--train-batch', '4']   # 128 batches: an epoch of a few seconds, to interrupt
WAIT_S = 240


def why_no_slurm():
    """None when SLURM answers here with a node that can run jobs, else the reason."""
    if shutil.which('sinfo') is None or shutil.which('sbatch') is None:
        return 'no SLURM commands (sinfo, sbatch) on the PATH: run scripts/slurm_local.sh start'
    try:
        proc = subprocess.run(['sinfo', '--noheader', '--format', '%T'], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 'sinfo did not answer within 30 s'
    if proc.returncode != 0:
        return f'sinfo failed: {proc.stderr.strip() or proc.returncode}'
    states = proc.stdout.split()
    if not any(s.rstrip('*~#') in ('idle', 'mixed', 'allocated') for s in states):
        return f'no SLURM node can run jobs (sinfo: {", ".join(states) or "no nodes"})'
    return None


@pytest.fixture(scope='module')
def slurm():
    why = why_no_slurm()
    if why:
        if os.environ.get(REQUIRE) == '1':
            pytest.fail(f'{REQUIRE}=1 but {why}')
        pytest.skip(f'{why} (scripts/slurm_local.sh start runs one on this machine)')


@pytest.fixture
def root(slurm, tmp_path):
    """The sweep's root; whatever SLURM still holds of it at the end is cancelled."""
    root = tmp_path / 'grid'
    yield root
    jobs = list(manifest_jobs(root).values())
    if jobs:
        subprocess.run(['scancel', *{j.split('_')[0] for j in jobs}], capture_output=True)


def sweep(root, *args, check=True):
    proc = subprocess.run([sys.executable, SWEEP, '--root', str(root), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f'sweep exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}')
    return proc


def launch(root, data, vary, *args, epochs=1, fixed=()):
    return sweep(root, '--scripts', 'cifar_baseline.py', *CPU, *args, '--vary', *vary,
                 '--', *TINY, *fixed, '--data-dir', data, '--epochs', str(epochs))


def manifest_jobs(root):
    path = root / 'sweep.json'
    if not path.exists():
        return {}
    return {r['name']: r['job'] for r in json.loads(path.read_text())['runs'] if r.get('job')}


def queued(job_ids):
    out = subprocess.run(['squeue', '--noheader', '--array', '--format', '%i'],
                         capture_output=True, text=True, check=True).stdout.split()
    return [j for j in job_ids if j in out]


def wait_until_gone(job_ids):
    deadline = time.time() + WAIT_S
    while queued(job_ids):
        assert time.time() < deadline, f'jobs {queued(job_ids)} still in SLURM after {WAIT_S} s'
        time.sleep(0.5)


def wait_for_epoch(folder, epoch):
    """Seconds epoch EPOCH took, once summary.csv records it."""
    summary, deadline = folder / 'summary.csv', time.time() + WAIT_S
    while True:
        lines = summary.read_text().splitlines() if summary.exists() else []
        if len(lines) > epoch:
            header, row = lines[0].split(','), lines[epoch].split(',')
            return float(row[header.index('seconds')])
        assert time.time() < deadline, f'{folder} did not finish epoch {epoch}'
        time.sleep(0.02)


def status_rows(root):
    """{run name: its --status line split in words}."""
    lines = sweep(root, '--status').stdout.splitlines()[2:]
    return {next(w for w in line.split() if w.startswith('cifar_baseline/')): line.split()
            for line in lines}


def job_output(log):
    """The lines of a job log without SLURM's own (srun:, slurmstepd...) and submitit's."""
    return [line for line in open(log).read().splitlines()
            if not line.startswith(('srun:', 'slurmstepd', 'submitit '))]


def test_a_grid_is_one_array_never_submitted_twice(root, fashion_root):
    vary = ['lr=0.1,0.05']
    first = launch(root, fashion_root, vary, '--max-parallel', '1')
    jobs = manifest_jobs(root)
    (array,) = {j.split('_')[0] for j in jobs.values()}
    assert sorted(jobs.values()) == [f'{array}_0', f'{array}_1'], first.stdout

    # Again while the second run still waits (held in the queue, so that it waits however fast
    # the first run is done): none is submitted twice.
    subprocess.run(['scontrol', 'hold', f'{array}_1'], check=True, capture_output=True)
    again = launch(root, fashion_root, vary, '--max-parallel', '1')
    assert '0 to run on slurm, 2 skipped' in again.stdout, again.stdout
    assert re.search(rf'skip \(queued\)  cifar_baseline/lr=0.05  job {array}_1 PENDING',
                     again.stdout), again.stdout
    assert manifest_jobs(root) == jobs
    assert [n for n in os.listdir(root / 'jobs') if n.endswith('submission.sh')] == [
        f'{array}_submission.sh']
    rows = status_rows(root)
    assert rows['cifar_baseline/lr=0.05'][:2] == ['queued', '-/1'], rows

    subprocess.run(['scontrol', 'release', f'{array}_1'], check=True, capture_output=True)
    wait_until_gone(jobs.values())
    rows = status_rows(root)
    assert all(row[:2] == ['done', '1/1'] for row in rows.values()), rows
    for name, job in jobs.items():
        log = root / 'jobs' / f'{job}_0_log.out'        # ARRAYID_TASK_0_log.out, as documented
        assert re.fullmatch(r'\d+_\d_0_log\.out', log.name) and log.exists()
        assert 'Traceback' not in log.read_text()
        assert job_output(log)[-1] == f'sweep: {name}: done'

    # The grid grows by one run: the two done are skipped, the new one is a new job.
    more = launch(root, fashion_root, ['lr=0.1,0.05,0.02'])
    assert '1 to run on slurm, 2 skipped' in more.stdout and more.stdout.count('skip (done)') == 2
    new = manifest_jobs(root)['cifar_baseline/lr=0.02']
    assert new.split('_')[0] != array
    wait_until_gone([new])
    assert status_rows(root)['cifar_baseline/lr=0.02'][:2] == ['done', '1/1']


def test_a_requeued_run_resumes_at_its_exact_batch(root, fashion_root, tmp_path):
    """`scontrol requeue` of the running job: SIGTERM, the run saves its batch, SLURM starts
    the job again, and it continues from that batch; the result is bitwise the run never
    interrupted (run directly, one thread as in the job)."""
    straight = tmp_path / 'straight'
    subprocess.run([sys.executable, os.path.join(ROOT, 'cifar_baseline.py'), *TINY, *SLOW,
                    '--data-dir', fashion_root, '--epochs', '2', '--lr', '0.1', '-c',
                    str(straight)],
                   env={**os.environ, 'OMP_NUM_THREADS': '1'}, check=True, capture_output=True)
    launch(root, fashion_root, ['lr=0.1'], epochs=2, fixed=SLOW)
    name = 'cifar_baseline/lr=0.1'
    (job,) = manifest_jobs(root).values()          # a grid of one run is one job
    folder = root / 'cifar_baseline' / 'lr=0.1'
    time.sleep(wait_for_epoch(folder, 1) / 2)      # into the middle of epoch 2
    subprocess.run(['scontrol', 'requeue', job], check=True, capture_output=True)
    wait_until_gone([job])
    deadline = time.time() + WAIT_S                # requeued: pending, then running again
    while status_rows(root)[name][0] != 'done':
        assert time.time() < deadline
        time.sleep(0.5)

    log = root / 'jobs' / f'{job}_0_log.out'
    text = log.read_text()
    assert 'Traceback' not in text
    stop = re.search(r'stopped by signal 15 at epoch 2, batch (\d+); saved', text)
    assert stop, text
    batch = int(stop.group(1))
    assert 0 < batch < 128
    assert re.search(rf'Resuming \S+: epoch 2, batch {batch},', text), text
    said = job_output(log)
    assert said.count(f'sweep: {name}: done') == 1 and said[-1] == f'sweep: {name}: done'
    assert any(line.startswith(f'sweep: {name}: stopped (') for line in said)
    assert_same_run(straight / 'checkpoint.pth.tar', folder / 'checkpoint.pth.tar')


def test_scancel_of_an_array_then_relaunch(root, fashion_root):
    """One run mid-training and one waiting when the array is cancelled: the first saves and
    says so in one line; the relaunch resumes it and starts the other."""
    vary = ['lr=0.1,0.05']
    launch(root, fashion_root, vary, '--max-parallel', '1', epochs=2, fixed=SLOW)
    jobs = manifest_jobs(root)
    first = root / 'cifar_baseline' / 'lr=0.1'
    time.sleep(wait_for_epoch(first, 1) / 2)
    (array,) = {j.split('_')[0] for j in jobs.values()}
    subprocess.run(['scancel', array], check=True, capture_output=True)
    wait_until_gone(jobs.values())
    rows = status_rows(root)
    assert rows['cifar_baseline/lr=0.1'][:2] == ['preempted', '1/2'], rows
    assert rows['cifar_baseline/lr=0.05'][:3] == ['not', 'started', '-/2'], rows
    log = root / 'jobs' / f'{jobs["cifar_baseline/lr=0.1"]}_0_log.out'
    assert 'Traceback' not in log.read_text()
    last = job_output(log)[-1]
    assert last.startswith('sweep: cifar_baseline/lr=0.1: stopped (cifar_baseline.py: stopped '
                           'by signal 15 at epoch 2, batch '), last

    again = launch(root, fashion_root, vary, epochs=2, fixed=SLOW)
    assert '2 to run on slurm, 0 skipped' in again.stdout, again.stdout
    relaunched = manifest_jobs(root)
    wait_until_gone(relaunched.values())
    rows = status_rows(root)
    assert all(row[:2] == ['done', '2/2'] for row in rows.values()), rows
    resumed = (root / 'jobs' / f'{relaunched["cifar_baseline/lr=0.1"]}_0_log.out').read_text()
    assert re.search(r'Resuming \S+: epoch 2, batch [1-9]', resumed), resumed


def test_what_cannot_run_is_refused_before_sbatch(root, fashion_root):
    """The default GPU on a CPU node, more CPUs or memory than the node has, values a script
    refuses and a run folder it refuses: one line each, exit 2, nothing submitted or
    written."""
    node = subprocess.run(['sinfo', '--noheader', '--Node', '--format', '%c|%m|%G'],
                          capture_output=True, text=True, check=True).stdout.split()[0]
    cpus, memory_mb, gres = node.split('|')
    before = subprocess.run(['squeue', '--noheader', '--format', '%i'], capture_output=True,
                            text=True, check=True).stdout
    args = ['--scripts', 'cifar_baseline.py', '--executor', 'slurm', '--vary', 'lr=0.1', '--',
            *TINY, '--data-dir', fashion_root]
    cases = [([], 'gpu' not in gres,
              '--gpus-per-run 1 (the default): no node of partition'),
             (['--gpus-per-run', '0', '--cpus-per-run', str(int(cpus) + 1)], True,
              'the largest node of partition'),
             (['--gpus-per-run', '0', '--cpus-per-run', '1',
               '--mem-gb', str(int(memory_mb) // 1024 + 1)], True, f'has {memory_mb} MB')]
    for flags, applies, message in cases:
        if not applies:
            continue
        proc = sweep(root, *flags, *args, check=False)
        assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert message in line, line
    assert f'has {cpus} CPUs; pass --cpus-per-run {cpus} or fewer' in sweep(
        root, '--gpus-per-run', '0', '--cpus-per-run', str(int(cpus) + 1), *args,
        check=False).stderr

    # A run that its script refuses (depth 7), and one whose model_best.pth.tar is not a
    # checkpoint (the class: tests/test_faults.py): each refused by its check, its files untouched.
    # (TINY's own --depth 8 is left out: sweep.py refuses a flag given twice.)
    assert TINY[2:4] == ['--depth', '8']
    fixed = [*TINY[:2], *TINY[4:], '--data-dir', fashion_root, '--epochs', '2',
             '--train-subset', '64']   # (given again after --: the last one counts)
    damaged = root / 'cifar_baseline' / 'depth=8'
    assert cifar_baseline.main([*fixed, '--epochs', '1', '--depth', '8', '-c', str(damaged)]) == 0
    (damaged / 'model_best.pth.tar').write_bytes(b'not a checkpoint')
    files = {p.name: p.read_bytes() for p in damaged.iterdir()}
    proc = sweep(root, *CPU, '--scripts', 'cifar_baseline.py', '--vary', 'depth=8,7', '--',
                 *fixed, check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f'refused  cifar_baseline/depth=8: cifar_baseline.py: error: '
                               f'{damaged}/model_best.pth.tar is not a readable checkpoint'), lines
    assert lines[1:] == [
        'refused  cifar_baseline/depth=7: cifar_baseline.py: error: --depth: depth must be 6n+2 '
        'with n >= 1 (8, 14, 20, 32, 44, 110, ...), got 7',
        'sweep.py: error: 2 of 2 runs would be refused (listed above): nothing was submitted']
    assert {p.name: p.read_bytes() for p in damaged.iterdir()} == files
    assert sorted(os.listdir(root)) == ['cifar_baseline']     # no sweep.json, no jobs/
    after = subprocess.run(['squeue', '--noheader', '--format', '%i'], capture_output=True,
                           text=True, check=True).stdout
    assert set(after.split()) <= set(before.split())   # nothing new (an earlier test's may end)


def test_a_packed_group_is_one_array_task(root, fashion_root, monkeypatch, capsys):
    """--pack: seeds 1 and 2 train in one job, one process (--seeds 1 2); each grid point's
    folder ends done and --status reports each. (sweep.py in this process: its checks are
    the other tests'.)"""
    assert TINY[-2:] == ['--manualSeed', '1']          # varied here instead
    sweep_in_this_process(monkeypatch)
    assert sweep_main(['--root', str(root), '--scripts', 'cifar_baseline.py', *CPU, '--pack',
                       '--vary', 'manualSeed=1,2', '--', *TINY[:-2], '--train-subset', '64',
                       '--data-dir', fashion_root, '--epochs', '1']) == 0
    assert 'submitted cifar_baseline/manualSeed={1,2} (2 runs packed)' in capsys.readouterr().out
    jobs = manifest_jobs(root)
    assert sorted(jobs) == ['cifar_baseline/manualSeed=1', 'cifar_baseline/manualSeed=2']
    (job,) = set(jobs.values())
    wait_until_gone([job])
    rows = status_rows(root)
    assert [row[:2] for row in rows.values()] == [['done', '1/1']] * 2, rows
    log = root / 'jobs' / f'{job}_0_log.out'
    assert '--seeds 1 2 -c' in log.read_text()
    assert job_output(log)[-1] == 'sweep: cifar_baseline/manualSeed={1,2}: done'
    for seed in (1, 2):
        folder = root / 'cifar_baseline' / f'manualSeed={seed}'
        args = json.loads((folder / 'args.json').read_text())
        assert (args['manualSeed'], args['seeds']) == (seed, [1, 2])

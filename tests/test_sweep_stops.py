"""How a sweep's job ends (sweeps/job.py): the time limit's signal stops the run, which saves,
and requeues the job, which continues from the run's checkpoint; a run done or failed ends
the job in one line and is never requeued; Ctrl-C and SIGTERM stop a local sweep in one line,
and the same command continues it."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import submitit
from submitit.core.utils import DelayedSubmission

from conftest import ROOT
from sweep_helpers import SWEEP, TINY, status_lines, summary_epochs
from sweeps import state
from sweeps.job import RunJob


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

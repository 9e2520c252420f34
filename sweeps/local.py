"""The local executor: submitit's LocalExecutor on this machine, a few runs at a time, each
with its own GPU and CPU threads; Ctrl-C or SIGTERM stops them all at a batch boundary."""
import os
import shutil
import signal
import subprocess
import sys
import time

import submitit

from utils.errors import UserError
from .job import RunJob
from .pack import runs_of
from .show import epochs_text, packed, shown
from .state import JOBS, classify, update_manifest

# Time limits are per job; relaunching the sweep continues past this anyway. (submitit's
# local controller itself starts a job at most 6 times per launch.)
MAX_TIMEOUT_REQUEUES = 50
NO_LIMIT_MIN = 60 * 24 * 365
RESEND_STOP_S = 2.0   # a controller that had not started its run yet gets the stop again


def visible_gpus(spec):
    """GPU ids for local job slots: --gpus, else CUDA_VISIBLE_DEVICES, else nvidia-smi -L."""
    if spec is not None:
        return [g.strip() for g in spec.split(',') if g.strip()]
    if 'CUDA_VISIBLE_DEVICES' in os.environ:
        return [g.strip() for g in os.environ['CUDA_VISIBLE_DEVICES'].split(',') if g.strip()]
    if shutil.which('nvidia-smi'):
        out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout
        return [str(i) for i, _ in enumerate(l for l in out.splitlines() if l.startswith('GPU '))]
    return []


def local_slots(opts):
    """One environment per concurrent run: its GPU (or none) and its CPU threads."""
    gpus = visible_gpus(opts.gpus)
    per_run = opts.gpus_per_run if opts.gpus_per_run is not None else (1 if gpus else 0)
    if per_run and not gpus:
        raise UserError('--gpus-per-run 1 but no GPU is visible (pass --gpus 0,1,... or '
                        '--gpus-per-run 0)')
    slots = len(gpus) if per_run else (opts.max_parallel or 1)
    if opts.max_parallel:
        if per_run and opts.max_parallel > len(gpus):
            raise UserError(f'--max-parallel {opts.max_parallel}: only {len(gpus)} GPU(s) '
                            f'({",".join(gpus)}), one per run')
        slots = opts.max_parallel
    threads = opts.cpus_per_run or max(1, (os.cpu_count() or 1) // slots)
    return [{'CUDA_VISIBLE_DEVICES': gpus[k] if per_run else '',
             'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
            for k in range(slots)]


class StopSignals:
    """SIGINT and SIGTERM to sweep.py: start no new run and stop the running ones, which save;
    a second signal stops waiting for them."""

    def __enter__(self):
        self.signum, self.hurry = 0, False
        self.previous = {s: signal.signal(s, self._handle)
                         for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.hurry = bool(self.signum)
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def start(executor, job):
    """Submit JOB with SIGINT ignored, which its controller process inherits: Ctrl-C at the
    terminal then reaches sweep.py to handle (below) instead of killing submitit's controller
    with a traceback, which would also kill the job a second later, mid-save."""
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return executor.submit(job)
    finally:
        signal.signal(signal.SIGINT, handler)


def stop(job):
    """SIGTERM to the job's controller, which passes it to the job, which passes it to the run:
    the run saves its exact batch and exits (a LocalJob's id is its controller's pid)."""
    try:
        os.kill(int(job.job_id), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        pass


def run_local(jobs, root, opts):
    """Run JOBS (runs, or under --pack jobs: sweeps/pack.py) through submitit's
    LocalExecutor, len(slots) at a time. Returns the exit status: 0 if all their runs are
    done, 1 if some are not, 128+N when stopped by signal N."""
    slots = local_slots(opts)
    executor = submitit.LocalExecutor(folder=os.path.join(root, JOBS),
                                      max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=opts.time or NO_LIMIT_MIN, gpus_per_node=0,
                               signal_delay_s=opts.signal_delay, stderr_to_stdout=True)
    runs = [run for job in jobs for run in runs_of(job)]
    pending, active, count, finished = list(jobs), {}, len(runs), 0
    stopped_at = 0.0
    with StopSignals() as signals:
        while (pending and not signals.signum) or active:
            for slot in [s for s in range(len(slots)) if s not in active]:
                if not pending or signals.signum:
                    break
                planned = pending.pop(0)
                job = start(executor, RunJob(planned, root, env=slots[slot],
                                             stop_timeout_s=max(10, opts.signal_delay - 10)))
                active[slot] = (planned, job, time.time())
                update_manifest(root, [{'name': member['name'], 'job': job.job_id,
                                        'executor': 'local', 'log': str(job.paths.stdout)}
                                       for member in runs_of(planned)])
                gpu = slots[slot]['CUDA_VISIBLE_DEVICES']
                where = f' on GPU {gpu}' if gpu else ''
                print(f'started  {planned["name"]}{packed(planned)}{where}  '
                      f'(log {shown(job.paths.stdout)})', flush=True)
            if signals.hurry:
                break
            if signals.signum and time.time() - stopped_at > RESEND_STOP_S:
                stopped_at = time.time()
                for _, job, _ in active.values():
                    stop(job)
            time.sleep(0.5)
            for slot, (planned, job, began) in list(active.items()):
                if job.done():
                    del active[slot]
                    for member in runs_of(planned):
                        finished += 1
                        state = classify(member, root)
                        print(f'[{finished}/{count}] {state["state"]:<11} {member["name"]}  '
                              f'{epochs_text(state)}  {time.time() - began:.0f}s' +
                              (f'  {state["message"]}' if state['message'] else ''), flush=True)
    if signals.signum:
        name = signal.Signals(signals.signum).name
        how = ('not waiting for the runs any longer: they go on saving a checkpoint'
               if signals.hurry else 'the runs saved a checkpoint and stopped')
        print(f'sweep.py: stopped by {name}: {how}; run the same command to continue',
              file=sys.stderr)
        return 128 + signals.signum
    return 0 if all(classify(r, root)['state'] == 'done' for r in runs) else 1

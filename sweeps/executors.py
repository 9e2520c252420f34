"""Where the runs go: submitit's LocalExecutor on this machine, or one SLURM job array."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import submitit

from utils.errors import UserError
from .job import RunJob
from .show import epochs_text, shown
from .state import JOBS, classify, update_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Time limits are per job; relaunching the sweep continues past this anyway.
MAX_TIMEOUT_REQUEUES = 50
LOCAL_NO_LIMIT_MIN = 60 * 24 * 365

def slurm_available():
    return shutil.which('srun') is not None


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


def run_local(runs, root, opts):
    """Run RUNS through submitit's LocalExecutor, len(slots) at a time; True if all done."""
    slots = local_slots(opts)
    executor = submitit.LocalExecutor(folder=os.path.join(root, JOBS),
                                      max_num_timeout=MAX_TIMEOUT_REQUEUES)
    executor.update_parameters(timeout_min=opts.time or LOCAL_NO_LIMIT_MIN, gpus_per_node=0,
                               signal_delay_s=opts.signal_delay, stderr_to_stdout=True)
    pending, active, count = list(runs), {}, len(runs)
    finished = 0
    stop = install_stop_handler()
    try:
        while pending or active:
            for slot in [s for s in range(len(slots)) if s not in active]:
                if not pending or stop['requested']:
                    break
                run = pending.pop(0)
                job = executor.submit(RunJob(run, root, env=slots[slot],
                                             stop_timeout_s=max(10, opts.signal_delay - 10)))
                active[slot] = (run, job, time.time())
                update_manifest(root, [{'name': run['name'], 'job': job.job_id,
                                        'log': str(job.paths.stdout)}])
                gpu = slots[slot]['CUDA_VISIBLE_DEVICES']
                print(f'started  {run["name"]}' + (f' on GPU {gpu}' if gpu else '') +
                      f'  (log {shown(job.paths.stdout)})', flush=True)
            if stop['requested'] and not stop['forwarded']:
                stop['forwarded'] = True
                for _, job, _ in active.values():
                    job.cancel(check=False)      # SIGINT: each run saves and stops
            if not active:
                break
            time.sleep(0.5)
            for slot, (run, job, start) in list(active.items()):
                if job.done():
                    del active[slot]
                    finished += 1
                    state = classify(run, root)
                    print(f'[{finished}/{count}] {state["state"]:<11} {run["name"]}  '
                          f'{epochs_text(state)}  {time.time() - start:.0f}s' +
                          (f'  {state["message"]}' if state['message'] else ''), flush=True)
    except KeyboardInterrupt:
        print('interrupted: the running runs save a checkpoint and stop; run the same command '
              'to continue', file=sys.stderr)
        deadline = time.time() + opts.signal_delay
        while any(not job.done() for _, job, _ in active.values()) and time.time() < deadline:
            time.sleep(0.5)
        return False
    if stop['requested']:
        print('stopped: run the same command to continue', file=sys.stderr)
    return all(classify(r, root)['state'] == 'done' for r in runs)


def install_stop_handler():
    """SIGTERM to sweep.py: start no new run and stop the running ones (they save)."""
    stop = {'requested': False, 'forwarded': False}

    def handle(signum, frame):
        stop['requested'] = True
    signal.signal(signal.SIGTERM, handle)
    return stop


def slurm_executor(root, opts, count):
    executor = submitit.SlurmExecutor(folder=os.path.join(root, JOBS),
                                      max_num_timeout=MAX_TIMEOUT_REQUEUES)
    params = dict(job_name=opts.job_name or f'sweep-{os.path.basename(os.path.abspath(root))}',
                  time=opts.time or 24 * 60, nodes=1, ntasks_per_node=1,
                  cpus_per_task=opts.cpus_per_run or 4,
                  array_parallelism=opts.max_parallel or count,
                  signal_delay_s=opts.signal_delay, stderr_to_stdout=True,
                  additional_parameters={'requeue': True},
                  # the job unpickles sweeps.job.RunJob, also where sbatch exports no environment
                  setup=[f'export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}'])
    gpus = 1 if opts.gpus_per_run is None else opts.gpus_per_run
    if gpus:
        params['gpus_per_node'] = gpus
    optional = dict(partition=opts.partition, account=opts.account, qos=opts.qos,
                    constraint=opts.constraint,
                    mem=f'{opts.mem_gb}GB' if opts.mem_gb else None)
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


def submit_slurm(runs, root, opts):
    """Submit RUNS as one job array; returns the jobs (submitit.SlurmJob)."""
    executor = slurm_executor(root, opts, len(runs))
    threads = {'OMP_NUM_THREADS': str(opts.cpus_per_run or 4)}
    jobs = executor.submit_array([RunJob(run, root, env=threads,
                                         stop_timeout_s=max(10, opts.signal_delay - 30))
                                  for run in runs])
    for run, job in zip(runs, jobs):
        print(f'submitted {run["name"]}  job {job.job_id}  '
              f'(log {shown(job.paths.stdout)})')
    return jobs

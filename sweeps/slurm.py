"""SLURM: what its nodes offer (sinfo), which of a sweep's jobs it still holds (squeue), and
the runs submitted as one job array. Every failure of a SLURM command is one line."""
import getpass
import io
import os
import re
import shlex
import shutil
import subprocess
from contextlib import contextmanager, redirect_stderr

import submitit

from utils.errors import UserError
from .job import RunJob
from .show import packed, shown
from .state import JOBS, MANIFEST

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CPUS, DEFAULT_GPUS, DEFAULT_TIME_MIN = 4, 1, 24 * 60
MAX_TIMEOUT_REQUEUES = 50    # time limits are per job; relaunching the sweep goes on anyway
COMMAND_TIMEOUT_S = 60


def slurm_available():
    return shutil.which('srun') is not None


def ask(command):
    """The output of a SLURM command; its failure as a UserError of one line."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f'{command[0]} failed: {" ".join(str(e).split())}') from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}'])[-1]
        raise UserError(f'{shlex.join(command)} failed: {last}')
    return proc.stdout


# ----------------------------------------------------------------------------- the queue

def queued_jobs(job_ids):
    """{job id: {'job', 'state', 'reason'}} of the JOB_IDS ('1234_5') that squeue still lists:
    pending (a requeued job waits as pending too), running, completing, suspended..."""
    if not job_ids:
        return {}
    out = ask(['squeue', '--noheader', '--array', '--user', getpass.getuser(),
               '--format', '%i|%T|%r'])
    found = {}
    for line in out.splitlines():
        job, state, reason = (line.strip().split('|') + ['', ''])[:3]
        if job in job_ids:
            found[job] = {'job': job, 'state': state, 'reason': reason}
    return found


# ----------------------------------------------------------------------------- resources

def gpu_count(gres):
    """GPUs in a node's sinfo GRES: 'gpu:2', 'gpu:a100:4(S:0-1)', 'gpu:a:2,gpu:b:1', '(null)'."""
    total = 0
    for item in re.sub(r'\([^)]*\)', '', gres).split(','):
        parts = item.strip().split(':')
        if parts[0] == 'gpu':
            total += int(parts[-1]) if parts[-1].isdigit() else 1
    return total


def leading_int(text):
    match = re.match(r'\d+', text.strip())
    return int(match.group()) if match else 0


def nodes_of_partition(partition):
    """(partition name, [{'cpus', 'memory_mb', 'gpus'}]) of PARTITION, or of the default
    partition when None, as sinfo lists them."""
    nodes, default = {}, None
    for line in ask(['sinfo', '--noheader', '--Node', '--format', '%P|%c|%m|%G']).splitlines():
        name, cpus, memory, gres = (line.strip().split('|') + ['', '', ''])[:4]
        if name.endswith('*'):
            name = default = name[:-1]
        nodes.setdefault(name, []).append({'cpus': leading_int(cpus),
                                           'memory_mb': leading_int(memory),
                                           'gpus': gpu_count(gres)})
    if partition is None and default is None:
        return None, []    # no default partition: sbatch asks for --partition itself
    name = partition or default
    if name not in nodes:
        raise UserError(f'--partition {name}: sinfo lists no such partition (there are: '
                        f'{", ".join(sorted(nodes)) or "none"})')
    return name, nodes[name]


def check_resources(opts):
    """Refuse, before anything is submitted, a run that no node of the partition can hold
    (such a job is refused by sbatch, or waits forever): its GPU, its CPUs, its memory."""
    partition, nodes = nodes_of_partition(opts.partition)
    if not nodes:
        return
    gpus = DEFAULT_GPUS if opts.gpus_per_run is None else opts.gpus_per_run
    default = ' (the default)'
    if gpus:
        nodes = [n for n in nodes if n['gpus'] >= gpus]
        if not nodes:
            raise UserError(f'--gpus-per-run {gpus}{default * (opts.gpus_per_run is None)}: no '
                            f'node of partition {partition} has a GPU (sinfo lists no gpu GRES); '
                            'to run on CPUs pass --gpus-per-run 0')
    kind = 'GPU node' if gpus else 'node'
    cpus = opts.cpus_per_run or DEFAULT_CPUS
    most = max(n['cpus'] for n in nodes)
    if cpus > most:
        raise UserError(f'--cpus-per-run {cpus}{default * (opts.cpus_per_run is None)}: the '
                        f'largest {kind} of partition {partition} has {most} CPUs; pass '
                        f'--cpus-per-run {most} or fewer')
    most = max(n['memory_mb'] for n in nodes)
    if opts.mem_gb and opts.mem_gb * 1024 > most:
        raise UserError(f'--mem-gb {opts.mem_gb}: the largest {kind} of partition {partition} '
                        f'has {most} MB; pass --mem-gb {most // 1024} or less')


# ----------------------------------------------------------------------------- the array

def slurm_executor(root, opts, count):
    executor = submitit.SlurmExecutor(folder=os.path.join(root, JOBS),
                                      max_num_timeout=MAX_TIMEOUT_REQUEUES)
    params = dict(job_name=opts.job_name or f'sweep-{os.path.basename(os.path.abspath(root))}',
                  time=opts.time or DEFAULT_TIME_MIN, nodes=1, ntasks_per_node=1,
                  cpus_per_task=opts.cpus_per_run or DEFAULT_CPUS,
                  array_parallelism=opts.max_parallel or count,
                  signal_delay_s=opts.signal_delay, stderr_to_stdout=True,
                  additional_parameters={'requeue': True},
                  # the job unpickles sweeps.job.RunJob, also where sbatch exports no environment
                  setup=[f'export PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}}'])
    gpus = DEFAULT_GPUS if opts.gpus_per_run is None else opts.gpus_per_run
    if gpus:
        params['gpus_per_node'] = gpus
    optional = dict(partition=opts.partition, account=opts.account, qos=opts.qos,
                    constraint=opts.constraint,
                    mem=f'{opts.mem_gb}GB' if opts.mem_gb else None)
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor


@contextmanager
def undone_on_failure(root):
    """A submission that fails leaves ROOT as it was: the files and folders it created
    (submitit's pickles and sbatch file, jobs/, sweep.json) are removed, a previous sweep.json
    is put back."""
    jobs, manifest = os.path.join(root, JOBS), os.path.join(root, MANIFEST)
    new_folders = [f for f in (root, jobs) if not os.path.isdir(f)]
    had = set(os.listdir(jobs)) if os.path.isdir(jobs) else set()
    previous = open(manifest, 'rb').read() if os.path.isfile(manifest) else None
    try:
        yield
    except BaseException:
        for name in set(os.listdir(jobs) if os.path.isdir(jobs) else ()) - had:
            path = os.path.join(jobs, name)
            if os.path.isfile(path) or os.path.islink(path):
                os.remove(path)
        if previous is None:
            if os.path.exists(manifest):
                os.remove(manifest)
        else:
            with open(manifest, 'wb') as f:
                f.write(previous)
        for folder in reversed(new_folders):
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise


def submit_slurm(runs, root, opts):
    """Submit RUNS (runs, or under --pack jobs: sweeps/pack.py) as one job array; returns the
    jobs (submitit.SlurmJob)."""
    threads = {'OMP_NUM_THREADS': str(opts.cpus_per_run or DEFAULT_CPUS)}
    try:
        # submitit prints a failed sbatch's stderr, which its error repeats: one line, below
        with redirect_stderr(io.StringIO()):
            jobs = slurm_executor(root, opts, len(runs)).submit_array(
                [RunJob(run, root, env=threads, stop_timeout_s=max(10, opts.signal_delay - 30))
                 for run in runs])
    except (submitit.core.utils.FailedJobError,
            submitit.core.utils.FailedSubmissionError) as e:
        raise UserError('sbatch refused the job array: ' +
                        ' '.join(str(e).split())[:300]) from None
    for run, job in zip(runs, jobs):
        print(f'submitted {run["name"]}{packed(run)}  job {job.job_id}  '
              f'(log {shown(job.paths.stdout)})')
    return jobs

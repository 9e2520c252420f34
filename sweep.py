"""Launch a grid of training runs through submitit, on SLURM or on this machine; resume it;
report it.

    python sweep.py --root ROOT --scripts SCRIPT [SCRIPT ...] [--vary NAME=V1,V2,... ...]
                    [options] [-- FIXED FLAGS...]

The grid is every combination of the --vary values, in the order given, for every script.
NAME is a flag of the entry scripts without its dashes (depth, dataset, manualSeed,
num-branches, lr...), a one-letter NAME is a short flag (d=cifar10 is -d cifar10); a value
holding spaces becomes several words (--vary "schedule=151 225,100 150"). Flags after `--`
are given to every run unchanged. A flag, varied or fixed, is passed only to the scripts whose
--help lists it (so --vary num-branches=1,2,3 gives ONE three runs and the baseline one); a
flag that no script lists is refused. The sweep itself sets -c and --resume auto.

Run folders follow from the script and the varied values alone, so the same grid always
gives the same folders:

    ROOT/SCRIPT_STEM/NAME1=VALUE1/NAME2=VALUE2/...    e.g. ROOT/cifar_one/depth=32/manualSeed=0

and every run is `python SCRIPT FIXED... VARIED... -c FOLDER --resume auto` (the python that
runs sweep.py), so a requeued, preempted or relaunched run continues from its checkpoint.
Fixed flags are not part of the folder name: a grid with other fixed flags (another
schedule, another lr) needs another --root, or it would continue the old runs. Launching
skips runs that are done (status.json says done with at least the run's --epochs, or the last
row of summary.csv reaches them), running (their folder's lock is held) or diverged (resuming
would repeat the same steps); everything else starts or continues.

Executors (--executor, default auto: slurm where `srun` is on the PATH, else local):
  slurm  one job array, one task and at most one GPU per run, --max-parallel array tasks at a
         time, #SBATCH --requeue, and --signal=USR2@SIGNAL_DELAY before the time limit: the
         job then stops the run (SIGTERM: it saves the exact batch), and requeues itself,
         which resumes it. A preemption's SIGTERM reaches the run directly and saves likewise;
         SLURM requeues it if the partition preempts by requeueing, else relaunch the sweep.
         sweep.py returns once the array is submitted.
  local  submitit's LocalExecutor on this machine, --max-parallel runs at a time, sweep.py
         waiting for all of them. Each job slot k owns GPUs (CUDA_VISIBLE_DEVICES is set to
         slot k's GPU for every run it starts; GPUs are taken from --gpus, else
         CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`), and every run gets OMP_NUM_THREADS =
         --cpus-per-run (default: the CPU count over --max-parallel). Ctrl-C stops the
         running runs at a batch boundary with a checkpoint; run the same command to go on.

--dry-run prints one line per run (what it would do, the folder, the command) and submits
nothing. --status prints, for each run, its state and the epochs it completed:
  done, running (lock held: host and pid), preempted (stopped by a signal, checkpoint
  saved), interrupted (status.json says running but no process holds the lock, or files
  without a status: killed, out of memory or node failure; relaunch continues from the last
  checkpoint), incomplete (finished fewer epochs than the grid asks, e.g. --epochs raised),
  failed (with the last error line), diverged, not started.
The launch writes ROOT/sweep.json (the runs and their commands), so `--status --root ROOT`
alone works; with --scripts it reports that grid instead. Job logs (the run's output, one
file per job) are ROOT/jobs/JOBID_0_log.out; ROOT/jobs/outcomes/ records how each job's run
exited.

Examples: the paper's comparison (24 runs), then the branch study on one GPU machine:

    python sweep.py --root checkpoints/paper --scripts cifar_baseline.py cifar_one.py \
        --vary dataset=cifar10,cifar100 depth=32,110 manualSeed=0,1,2 --partition gpu \
        -- --epochs 300 --schedule 151 225 --gamma 0.1 --lr 0.1 --wd 1e-4 --train-batch 128
    python sweep.py --root checkpoints/branches --executor local --scripts cifar_one.py \
        --vary num-branches=1,2,3,4,5 manualSeed=0,1,2 -- --dataset cifar100 --depth 32
"""
import argparse
import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from itertools import product

import submitit

from utils.atomic import write_json_atomic
from utils.errors import UserError
from utils.runlock import lock_holder

REPO = os.path.dirname(os.path.abspath(__file__))
MANIFEST, JOBS = 'sweep.json', 'jobs'
STATUS, SUMMARY, ARGS = 'status.json', 'summary.csv', 'args.json'
CHECKPOINT = 'checkpoint.pth.tar'
RESERVED = {'-c', '--checkpoint', '--resume', '--overwrite', '-e', '--evaluate', '--init-from',
            '--rewind'}
SKIPPED = ('done', 'running', 'diverged')          # launching leaves these alone
STATES = ('done', 'running', 'preempted', 'interrupted', 'incomplete', 'failed', 'diverged',
          'not started')
# Time limits are per job; relaunching the sweep continues past this anyway.
MAX_TIMEOUT_REQUEUES = 50
LOCAL_NO_LIMIT_MIN = 60 * 24 * 365


def now():
    return datetime.now().astimezone().isoformat(timespec='seconds')


def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(path, data, indent=1)


def read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- the grid

def flag_of(name):
    """'depth' -> '--depth', 'd' -> '-d', '--lr' -> '--lr'."""
    if name.startswith('-'):
        return name
    return f'-{name}' if len(name) == 1 else f'--{name}'


def parse_vary(specs):
    """['depth=32,110', ...] -> [(flag, key, [value, ...]), ...] in the order given."""
    axes, seen = [], set()
    for spec in specs:
        name, sep, values = spec.partition('=')
        values = [v.strip() for v in values.split(',')] if sep else []
        if not name or not values or not all(values):
            raise UserError(f'--vary {spec!r}: expected NAME=V1,V2,... (e.g. depth=32,110)')
        flag = flag_of(name)
        if flag in RESERVED:
            raise UserError(f'--vary {name}: the sweep sets -c and --resume itself')
        if flag in seen:
            raise UserError(f'--vary {name} is given twice')
        seen.add(flag)
        axes.append((flag, safe(name.lstrip('-')), values))
    return axes


def is_flag(token):
    return token.startswith('-') and not re.fullmatch(r'-\d[\d.e+-]*', token)


def split_fixed(tokens):
    """['--epochs', '300', '--schedule', '151', '225'] -> [['--epochs', '300'], [...]]."""
    groups = []
    for token in tokens:
        if is_flag(token):
            flag = token.split('=', 1)[0]
            if flag in RESERVED:
                raise UserError(f'{flag}: the sweep sets -c FOLDER and --resume auto itself')
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            raise UserError(f'fixed flags must start with a flag, got {token!r}')
    return groups


def safe(text):
    """A path component: letters, digits and ._+- kept, anything else becomes '_'."""
    return re.sub(r'[^A-Za-z0-9._+-]', '_', text)


def help_flags(script, cwd):
    """The flags SCRIPT's --help lists."""
    proc = subprocess.run([sys.executable, script, '--help'], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
        raise UserError(f'{script} --help failed (exit {proc.returncode}): {last}')
    return set(re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', proc.stdout))


def flags_of_scripts(scripts, cwd):
    with ThreadPoolExecutor(max_workers=len(scripts)) as pool:
        return dict(zip(scripts, pool.map(lambda s: help_flags(s, cwd), scripts)))


def check_flags_known(axes, groups, flags_of):
    for flag in [a[0] for a in axes] + [g[0].split('=', 1)[0] for g in groups]:
        if not any(flag in flags for flags in flags_of.values()):
            raise UserError(f'{flag} is not a flag of {", ".join(flags_of)} (see their --help)')


def target_epochs(argv):
    """The --epochs a command asks for, or None if it leaves the script's default."""
    epochs = None
    for i, token in enumerate(argv):
        if token == '--epochs' and i + 1 < len(argv):
            epochs = argv[i + 1]
        elif token.startswith('--epochs='):
            epochs = token.split('=', 1)[1]
    try:
        return int(epochs) if epochs is not None else None
    except ValueError:
        return None


def expand(root, scripts, axes, groups, flags_of, cwd):
    """Every run of the grid: dicts of name (folder under root), folder, script, argv, epochs.

    Deterministic: scripts in the order given, then the product of the axes in the order
    given. Axes and fixed flags a script does not list are left out for that script.
    """
    root = os.path.abspath(root)
    runs = []
    for script in scripts:
        flags = flags_of[script]
        own_axes = [a for a in axes if a[0] in flags]
        fixed = [t for g in groups if g[0].split('=', 1)[0] in flags for t in g]
        script_path = os.path.abspath(os.path.join(cwd, script))
        stem = safe(os.path.splitext(os.path.basename(script))[0])
        for values in product(*[a[2] for a in own_axes]):
            parts = [stem] + [f'{key}={safe(value)}'
                              for (_, key, _), value in zip(own_axes, values)]
            name = '/'.join(parts)
            folder = os.path.join(root, *parts)
            varied = [t for (flag, _, _), value in zip(own_axes, values)
                      for t in [flag, *shlex.split(value)]]
            argv = [sys.executable, script_path, *fixed, *varied, '-c', folder, '--resume', 'auto']
            runs.append({'name': name, 'folder': folder, 'script': script_path, 'argv': argv,
                         'epochs': target_epochs(argv)})
    names = [r['name'] for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UserError(f'two runs of the grid would share the folder {clash[0]!r}; '
                        'use values that differ in letters or digits')
    return runs


# ----------------------------------------------------------------------------- manifest

def read_manifest(root):
    return read_json(os.path.join(root, MANIFEST)) or {'runs': []}


def update_manifest(root, runs, **fields):
    """Merge RUNS into ROOT/sweep.json by name (a relaunch updates commands and job ids)."""
    manifest = read_manifest(root)
    by_name = {r['name']: r for r in manifest['runs']}
    for run in runs:
        by_name[run['name']] = {**by_name.get(run['name'], {}), **run}
    manifest.update(fields, root=root, updated=now(), runs=list(by_name.values()))
    write_json(os.path.join(root, MANIFEST), manifest)


def runs_of_manifest(root):
    runs = read_manifest(root)['runs']
    for run in runs:  # the folder follows the root, so a moved root still reports
        run['folder'] = os.path.join(os.path.abspath(root), *run['name'].split('/'))
    return runs


# ----------------------------------------------------------------------------- run state

def outcome_path(root, name):
    return os.path.join(os.path.abspath(root), JOBS, 'outcomes', name.replace('/', '--') + '.json')


def completed_epochs(folder):
    """Last epoch of FOLDER/summary.csv, or None."""
    try:
        with open(os.path.join(folder, SUMMARY)) as f:
            rows = list(csv.DictReader(f))
        return int(float(rows[-1]['epoch'])) if rows else 0
    except (OSError, KeyError, ValueError, IndexError):
        return None


def mtime(path):
    try:
        return os.path.getmtime(path)
    except OSError:
        return None


DIED = 'the process died without a word (killed, out of memory or node failure)'


def classify(run, root):
    """{'state', 'epoch', 'epochs', 'message', 'holder'} of one run, from its files.

    In order: a held lock means running; reaching the epochs means done; then whichever
    says more about the last attempt: the engine's status.json, or, when the engine wrote
    nothing since the last job started (it failed before that), this sweep's record of how
    the job's run exited.
    """
    folder = run['folder']
    status = read_json(os.path.join(folder, STATUS))
    status_time = mtime(os.path.join(folder, STATUS))
    outcome = read_json(outcome_path(root, run['name']))
    summary_epoch = completed_epochs(folder)
    epochs = run.get('epochs') or (status or {}).get('epochs') or (
        read_json(os.path.join(folder, ARGS)) or {}).get('epochs')
    epoch = (status or {}).get('epoch', summary_epoch)
    info = {'epoch': epoch, 'epochs': epochs, 'message': '', 'holder': None}

    holder = lock_holder(folder)
    if holder:
        return {**info, 'state': 'running', 'holder': holder}
    if epochs is not None and max(epoch or 0, summary_epoch or 0) >= epochs:
        return {**info, 'state': 'done'}
    if outcome and (status_time is None or status_time < outcome.get('started_ts', 0)):
        state = outcome.get('state', 'failed')
        return {**info, 'state': 'incomplete' if state == 'done' else state,
                'message': outcome.get('message', '')}
    if status is not None:
        return {**info, **from_status(status, status_time, outcome)}
    if summary_epoch is not None or os.path.exists(os.path.join(folder, CHECKPOINT)):
        return {**info, 'state': 'interrupted', 'message': DIED}
    return {**info, 'state': 'not started'}


def from_status(status, status_time, outcome):
    """State and message from status.json of a run that is not running and not done."""
    state, message = status.get('state', 'failed'), status.get('message', '')
    if state == 'running':     # but nobody holds the lock: the process died
        later = outcome if outcome and outcome.get('ended_ts', 0) >= status_time else {}
        return {'state': 'interrupted', 'message': later.get('message') or DIED}
    if state == 'done':        # done with fewer epochs than the grid now asks
        return {'state': 'incomplete', 'message': message}
    return {'state': state if state in STATES else 'failed', 'message': message}


# ----------------------------------------------------------------------------- the job

def exit_message(returncode, last_line):
    if returncode < 0:
        return f'killed by {signal.Signals(-returncode).name}'
    return last_line or f'exit status {returncode}'


class RunFailed(RuntimeError):
    pass


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: the entry script as a child process with the same python.

    The child's stdout goes straight to the job's log; its stderr is copied there line by line
    and its last line kept for the error. The child ignores submitit's time-limit signal
    (SIGUSR2, sent to the whole job SIGNAL_DELAY seconds before the limit); on it submitit
    calls checkpoint(), which stops the child with SIGTERM (the engine saves that exact batch)
    and requeues this same job, which resumes with --resume auto. SIGTERM and SIGINT reaching
    this process (preemption, Ctrl-C, scancel) are passed on to the child.
    """

    def __init__(self, run, root, env=None, cwd=None, stop_timeout_s=60):
        self.argv, self.name, self.folder = run['argv'], run['name'], run['folder']
        self.outcome = outcome_path(root, run['name'])
        self.env, self.cwd = dict(env or {}), cwd or os.getcwd()
        self.stop_timeout_s = stop_timeout_s
        self._proc = self._started = self._last = self._tee = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_proc'] = state['_started'] = state['_last'] = state['_tee'] = None
        return state

    def _record(self, state, returncode, message, started):
        write_json(self.outcome, {
            'state': state, 'returncode': returncode, 'message': message,
            'host': socket.gethostname(), 'started': started[0], 'started_ts': started[1],
            'ended': now(), 'ended_ts': time.time()})

    def __call__(self):
        self._started = started = (now(), time.time())
        print(f'sweep: {self.name}: {shlex.join(self.argv)}', flush=True)
        preempt = getattr(signal, 'SIG' + os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2'))
        self._proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stderr=subprocess.PIPE,
            text=True, errors='replace', preexec_fn=lambda: signal.signal(preempt, signal.SIG_IGN))
        self._last = last = ['']
        self._tee = tee = threading.Thread(target=copy_lines, daemon=True,
                                           args=(self._proc.stderr, sys.stderr, last))
        tee.start()
        # submitit ignores SIGTERM in the job; pass it on so that a preemption's SIGTERM
        # stops the run with a checkpoint even where it is not sent to the child directly.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, self._forward) if main else None
        try:
            # Poll rather than wait(): checkpoint() runs in a signal handler on this thread
            # and must be able to reap the child itself.
            while self._proc.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            self._proc.send_signal(signal.SIGINT)   # the engine saves and exits
            self._wait_child()
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        tee.join(timeout=10)
        code = self._proc.returncode
        stopped = {128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT}
        state = 'done' if code == 0 else 'preempted' if code in stopped else 'failed'
        message = '' if code == 0 else exit_message(code, last[0])
        self._record(state, code, message, started)
        if code != 0:
            raise RunFailed(f'{self.name}: exit {code}: {message}')
        return {'name': self.name, 'folder': self.folder}

    def _forward(self, signum, frame):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signum)

    def _wait_child(self):
        deadline = time.time() + self.stop_timeout_s
        while self._proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)

    def checkpoint(self, *args, **kwargs):
        """Preempted or near the time limit: stop the run so it saves, then requeue it."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._wait_child()
            self._tee.join(timeout=10)  # the child's last lines reach the log before requeueing
            code = self._proc.returncode
            how = (f'did not stop within {self.stop_timeout_s}s' if code is None
                   else exit_message(code, self._last[0]))
            self._record('preempted', code, f'stopped to be requeued (time limit or '
                         f'preemption): {how}', self._started)
        fresh = RunJob.__new__(RunJob)
        fresh.__dict__.update(self.__getstate__())
        return submitit.helpers.DelayedSubmission(fresh)


def copy_lines(source, sink, last):
    for line in source:
        sink.write(line)
        sink.flush()
        if line.strip():
            last[0] = line.strip()


# ----------------------------------------------------------------------------- executors

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
                  # the job unpickles sweep.RunJob, also where sbatch exports no environment
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


# ----------------------------------------------------------------------------- reports

def shown(path):
    """PATH relative to the current folder when under it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith('..') else relative


def epochs_text(state):
    epoch = '-' if state['epoch'] is None else state['epoch']
    epochs = '?' if state['epochs'] is None else state['epochs']
    return f'{epoch}/{epochs}'


def print_status(runs, root):
    states = [classify(run, root) for run in runs]
    counts = {s: sum(st['state'] == s for st in states) for s in STATES}
    print(f'{root}: {len(runs)} runs: ' +
          ', '.join(f'{n} {s}' for s, n in counts.items() if n))
    print(f'{"state":<12} {"epoch":>9}  run')
    for run, st in zip(runs, states):
        detail = ''
        if st['holder']:
            detail = f'  pid {st["holder"].get("pid")} on {st["holder"].get("host")}'
        elif st['message']:
            detail = f'  {st["message"]}'
        print(f'{st["state"]:<12} {epochs_text(st):>9}  {run["name"]}{detail}')
    return states


def print_plan(runs, states):
    todo = [r for r, s in zip(runs, states) if s['state'] not in SKIPPED]
    print(f'{len(runs)} runs: {len(todo)} to run, {len(runs) - len(todo)} skipped')
    for run, st in zip(runs, states):
        if st['state'] in SKIPPED:
            print(f'skip ({st["state"]})  {run["folder"]}')
        else:
            verb = 'start' if st['state'] == 'not started' else 'resume'
            print(f'{verb}  {run["folder"]}  {shlex.join(run["argv"])}')
    return todo


# ----------------------------------------------------------------------------- command line

def build_parser():
    p = argparse.ArgumentParser(
        prog='sweep.py', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage='%(prog)s --root ROOT --scripts SCRIPT [SCRIPT ...] [--vary NAME=V1,V2 ...] '
              '[options] [-- FIXED FLAGS ...]')
    p.add_argument('--root', required=True, help='folder holding the runs, sweep.json and jobs/')
    p.add_argument('--scripts', nargs='+', default=[], metavar='SCRIPT',
                   help='entry scripts, e.g. cifar_baseline.py cifar_one.py')
    p.add_argument('--vary', nargs='+', action='extend', default=[], metavar='NAME=V1,V2',
                   help='a grid axis: a flag of the scripts and its values')
    what = p.add_mutually_exclusive_group()
    what.add_argument('--dry-run', action='store_true', help='print the plan, submit nothing')
    what.add_argument('--status', action='store_true', help='report the state of every run')
    p.add_argument('--executor', choices=['auto', 'slurm', 'local'], default='auto',
                   help='auto: slurm where srun is on the PATH, else local')
    p.add_argument('--max-parallel', type=int, default=None, metavar='N',
                   help='runs at a time (slurm: array parallelism, default all; local: '
                        'default one per GPU, or 1 on CPU)')
    p.add_argument('--gpus-per-run', type=int, choices=[0, 1], default=None,
                   help='GPUs per run (runs are one process; default 1 on slurm, on local 1 '
                        'if a GPU is visible)')
    p.add_argument('--cpus-per-run', type=int, default=None, metavar='C',
                   help='CPU cores per run: slurm --cpus-per-task (default 4) and '
                        'OMP_NUM_THREADS (local default: CPU count / runs at a time)')
    p.add_argument('--gpus', default=None, metavar='IDS',
                   help='local: GPU ids to hand out one per run (default CUDA_VISIBLE_DEVICES, '
                        'else all that nvidia-smi lists)')
    p.add_argument('--time', type=int, default=None, metavar='MIN',
                   help='time limit per job in minutes (slurm default 1440; local: none); '
                        'a job reaching it saves, requeues and continues')
    p.add_argument('--signal-delay', type=int, default=120, metavar='S',
                   help='seconds before the time limit at which the job is told to save')
    p.add_argument('--partition', help='slurm partition')
    p.add_argument('--account', help='slurm account')
    p.add_argument('--qos', help='slurm quality of service')
    p.add_argument('--constraint', help='slurm node constraint, e.g. a GPU type')
    p.add_argument('--mem-gb', type=int, default=None, help='slurm memory per job (GB)')
    p.add_argument('--job-name', default=None, help='slurm job name (default sweep-ROOTNAME)')
    return p


def split_argv(argv):
    """sweep's own arguments, and the fixed flags after the first '--'."""
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1:]
    return argv, []


def grid_runs(opts, fixed):
    cwd = os.getcwd()
    for script in opts.scripts:
        if not os.path.isfile(os.path.join(cwd, script)):
            raise UserError(f'no script {script!r} in {cwd}')
    axes, groups = parse_vary(opts.vary), split_fixed(fixed)
    flags_of = flags_of_scripts(opts.scripts, cwd)
    check_flags_known(axes, groups, flags_of)
    return expand(opts.root, opts.scripts, axes, groups, flags_of, cwd)


def main(argv=None):
    own, fixed = split_argv(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser()
    opts = parser.parse_args(own)
    try:
        return run_command(opts, fixed)
    except UserError as e:
        print(f'sweep.py: error: {e}', file=sys.stderr)
        return 2


def run_command(opts, fixed):
    root = os.path.abspath(opts.root)
    if opts.status and not opts.scripts:
        runs = runs_of_manifest(root)
        if not runs:
            raise UserError(f'no {MANIFEST} under {opts.root!r}: pass the launch\'s --scripts '
                            'and --vary (and fixed flags) to report that grid')
        print_status(runs, opts.root)
        return 0
    if not opts.scripts:
        raise UserError('--scripts is required (e.g. --scripts cifar_baseline.py cifar_one.py)')
    executor = opts.executor
    if executor == 'auto':
        executor = 'slurm' if slurm_available() else 'local'
    if executor == 'slurm' and not slurm_available() and not (opts.status or opts.dry_run):
        raise UserError('--executor slurm: srun is not on the PATH (run this on a SLURM login '
                        'node, or use --executor local)')
    runs = grid_runs(opts, fixed)
    if opts.status:
        print_status(runs, opts.root)
        return 0
    states = [classify(run, root) for run in runs]
    if opts.dry_run:
        print_plan(runs, states)
        return 0
    todo = [r for r, s in zip(runs, states) if s['state'] not in SKIPPED]
    for run, st in zip(runs, states):
        if st['state'] in SKIPPED:
            print(f'skip ({st["state"]})  {run["name"]}')
    skipped = len(runs) - len(todo)
    print(f'{len(runs)} runs under {opts.root}: {len(todo)} to run on {executor}, '
          f'{skipped} skipped (done, running or diverged)', flush=True)
    update_manifest(root, runs, executor=executor)
    if not todo:
        return 0
    # The job processes unpickle sweep.RunJob: let them import this file.
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    if executor == 'slurm':
        try:
            jobs = submit_slurm(todo, root, opts)
        except (submitit.core.utils.FailedJobError,
                submitit.core.utils.FailedSubmissionError) as e:
            raise UserError('sbatch refused the job array: ' +
                            ' '.join(str(e).split())[:300]) from None
        update_manifest(root, [{'name': r['name'], 'job': j.job_id, 'log': str(j.paths.stdout)}
                               for r, j in zip(todo, jobs)])
        print(f'follow with: python sweep.py --root {shlex.quote(opts.root)} --status')
        return 0
    ok = run_local(todo, root, opts)
    states = [classify(run, root) for run in runs]
    counts = {s: sum(st['state'] == s for st in states) for s in STATES}
    print(f'{opts.root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items() if n))
    return 0 if ok else 1


if __name__ == '__main__':
    import sweep  # the jobs pickle sweep.RunJob (importable), not __main__.RunJob
    sys.exit(sweep.main())

"""sweep.py's command line: parse, expand the grid, ask the scheduler, check every run, then
report, plan or launch. Every anticipated failure is one line and exit status 2."""
import argparse
import os
import shlex
import subprocess
import sys

import sweeps
from utils.errors import Parser, UserError, one_line_errors
from .check import check_runs
from .grid import (check_each_flag_once, check_flags_known, expand, flags_of_scripts,
                   parse_vary, split_fixed)
from .local import run_local
from .pack import check_packable, is_pack, plan_jobs, runs_of
from .show import print_plan, print_status
from .slurm import (DEFAULT_TIME_MIN, REPO, check_resources, queued_jobs, slurm_available,
                    submit_slurm, undone_on_failure)
from .state import (MANIFEST, SKIPPED, STATES, classify, runs_of_manifest, slurm_jobs,
                    update_manifest)

SIGNAL_DELAY_S = 120


def at_least(minimum):
    """An argparse type: a whole number >= MINIMUM."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value
    return parse


def build_parser():
    p = Parser(
        prog='sweep.py', description=sweeps.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage='%(prog)s --root ROOT --scripts SCRIPT [SCRIPT ...] [--vary NAME=V1,V2 ...] '
              '[options] [-- FIXED FLAGS ...]')
    p.add_argument('--root', required=True, help='folder holding the runs, sweep.json and jobs/')
    p.add_argument('--scripts', nargs='+', default=[], metavar='SCRIPT',
                   help='entry scripts, e.g. cifar_baseline.py cifar_one.py')
    p.add_argument('--vary', nargs='+', action='extend', default=[], metavar='NAME=V1,V2',
                   help='a grid axis: a flag of the scripts and its values')
    what = p.add_mutually_exclusive_group()
    what.add_argument('--dry-run', action='store_true',
                      help='print the plan and check every run to start, submit nothing')
    what.add_argument('--status', action='store_true', help='report the state of every run')
    p.add_argument('--pack', action='store_true',
                   help='train the runs that differ only by their seed (--vary manualSeed=...) '
                        'as one pack per job, one process and one GPU (cifar_*.py --seeds); '
                        'each run keeps its folder')
    p.add_argument('--executor', choices=['auto', 'slurm', 'local'], default='auto',
                   help='auto: slurm where srun is on the PATH, else local')
    p.add_argument('--max-parallel', type=at_least(1), default=None, metavar='N',
                   help='runs at a time (slurm: array parallelism, default all; local: '
                        'default one per GPU, or 1 on CPU)')
    p.add_argument('--gpus-per-run', type=int, choices=[0, 1], default=None,
                   help='GPUs per run (runs are one process; default 1 on slurm, on local 1 '
                        'if a GPU is visible)')
    p.add_argument('--cpus-per-run', type=at_least(1), default=None, metavar='C',
                   help='CPU cores per run: slurm --cpus-per-task (default 4) and '
                        'OMP_NUM_THREADS (local default: CPU count / runs at a time)')
    p.add_argument('--gpus', default=None, metavar='IDS',
                   help='local: GPU ids to hand out one per run (default CUDA_VISIBLE_DEVICES, '
                        'else all that nvidia-smi lists)')
    p.add_argument('--time', type=at_least(1), default=None, metavar='MIN',
                   help=f'time limit per job in minutes (slurm default {DEFAULT_TIME_MIN}; '
                        'local: none); a job reaching it saves, requeues and continues')
    p.add_argument('--signal-delay', type=at_least(0), default=None, metavar='S',
                   help='seconds before the time limit at which the job is told to save '
                        f'(default {SIGNAL_DELAY_S}, or half of a shorter time limit)')
    p.add_argument('--partition', help='slurm partition')
    p.add_argument('--account', help='slurm account')
    p.add_argument('--qos', help='slurm quality of service')
    p.add_argument('--constraint', help='slurm node constraint, e.g. a GPU type')
    p.add_argument('--mem-gb', type=at_least(1), default=None,
                   help='slurm memory per job (GB)')
    p.add_argument('--job-name', default=None, help='slurm job name (default sweep-ROOTNAME)')
    return p


def split_argv(argv):
    """sweep's own arguments, and the fixed flags after the first '--'."""
    if '--' in argv:
        i = argv.index('--')
        return argv[:i], argv[i + 1:]
    return argv, []


def set_signal_delay(opts, executor):
    """The seconds before the time limit at which a job is told to save: they must leave the
    job time to run (else the signal never comes, or comes at once)."""
    limit = opts.time or (DEFAULT_TIME_MIN if executor == 'slurm' else None)
    if opts.signal_delay is None:
        opts.signal_delay = SIGNAL_DELAY_S if limit is None else min(SIGNAL_DELAY_S,
                                                                      limit * 60 // 2)
    elif limit is not None and opts.signal_delay >= limit * 60:
        raise UserError(f'--signal-delay {opts.signal_delay} is not shorter than the time limit '
                        f'of {limit} min ({limit * 60} s): the job would never be told to save '
                        'before it; pass a smaller --signal-delay or a longer --time')


def grid_runs(opts, fixed):
    cwd = os.getcwd()
    for script in opts.scripts:
        if not os.path.isfile(os.path.join(cwd, script)):
            raise UserError(f'no script {script!r} in {cwd}')
    axes, groups = parse_vary(opts.vary), split_fixed(fixed)
    flags_of = flags_of_scripts(opts.scripts, cwd)
    check_flags_known(axes, groups, flags_of)
    check_each_flag_once(axes, groups, flags_of)
    if opts.pack and not opts.status:
        check_packable(os.path.abspath(opts.root), axes, groups, flags_of)
    return expand(opts.root, opts.scripts, axes, groups, flags_of, cwd)


def check_root(root):
    """Refuse a --root that the launch could not create or write into, before anything is
    expanded, checked or written."""
    existing = root
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    verb = 'write into' if existing == root else 'create'
    if not os.path.isdir(existing):
        raise UserError(f'cannot {verb} {root}: {existing} is a file, not a folder')
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise UserError(f'cannot {verb} {root}: {existing}: Read-only file system')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f'cannot {verb} {root}: {existing}: Permission denied')


def in_scheduler(root, launching):
    """{run name: squeue's entry} of the runs whose last SLURM job is still queued, requeued or
    running. A launch refuses to go on when squeue cannot answer (it could submit a run
    twice); --status and --dry-run say so in one line and go on from the run files."""
    jobs = slurm_jobs(root)
    if not jobs:
        return {}
    try:
        found = queued_jobs(set(jobs.values()))
    except UserError as e:
        if launching:
            raise UserError(f'{e}: cannot tell which runs of {root} SLURM still holds, so '
                            'nothing is submitted (launch where squeue answers)') from None
        print(f'sweep.py: warning: {e}: the states below ignore what SLURM still holds',
              file=sys.stderr)
        return {}
    return {name: found[job] for name, job in jobs.items() if job in found}


def refuse_any(refusals, count, doing, what='runs'):
    """Each run (or job) a script refuses, in one line; then stop, with nothing submitted."""
    for run, line in refusals:
        print(f'refused  {run["name"]}: {line}', file=sys.stderr)
    if refusals:
        raise UserError(f'{len(refusals)} of {count} {what} would be refused (listed above): '
                        f'{doing}')


def counted(count, noun):
    """'1 job', '3 jobs'."""
    return f'{count} {noun}{"s" * (count != 1)}'


def packs_text(jobs):
    """'4 runs in 2 packs': how many runs of JOBS train packed, in how many packs."""
    packs = [job for job in jobs if is_pack(job)]
    return (f'{counted(sum(len(job["runs"]) for job in packs), "run")} in '
            f'{counted(len(packs), "pack")}')


def main(argv=None):
    own, fixed = split_argv(sys.argv[1:] if argv is None else list(argv))
    opts = build_parser().parse_args(own)
    return one_line_errors('sweep.py', lambda: run_naming_errors(opts, fixed))


def run_naming_errors(opts, fixed):
    """run_command, with filesystem and scheduler errors the steps did not name as UserError
    (a local sweep handles its own Ctrl-C: sweeps/local.py)."""
    try:
        return run_command(opts, fixed)
    except OSError as e:
        raise UserError(f'{e.filename}: {e.strerror or e}' if e.filename else str(e)) from None
    except subprocess.SubprocessError as e:
        raise UserError(' '.join(str(e).split())) from None


def run_command(opts, fixed):
    root = os.path.abspath(opts.root)
    if opts.status and not opts.scripts:
        runs = runs_of_manifest(root)
        if not runs:
            what = (f'{os.path.join(opts.root, MANIFEST)} lists no runs'
                    if os.path.exists(os.path.join(root, MANIFEST)) else
                    f'no {MANIFEST} under {opts.root!r}')
            raise UserError(f'{what}: pass the launch\'s --scripts and --vary (and fixed flags) '
                            'to report that grid')
        print_status(runs, opts.root, in_scheduler(root, launching=False))
        return 0
    if not opts.scripts:
        raise UserError('--scripts is required (e.g. --scripts cifar_baseline.py cifar_one.py)')
    if not opts.status:  # --dry-run says what the launch would, this too
        check_root(root)
    executor = opts.executor
    if executor == 'auto':
        executor = 'slurm' if slurm_available() else 'local'
    if executor == 'slurm' and not slurm_available() and not (opts.status or opts.dry_run):
        raise UserError('--executor slurm: srun is not on the PATH (run this on a SLURM login '
                        'node, or use --executor local)')
    set_signal_delay(opts, executor)
    launching = not (opts.status or opts.dry_run)
    if launching and executor == 'slurm':
        check_resources(opts)
    runs = grid_runs(opts, fixed)
    queued = in_scheduler(root, launching)
    if opts.status:
        print_status(runs, opts.root, queued)
        return 0
    states = [classify(run, root, queued.get(run['name'])) for run in runs]
    todo = [r for r, s in zip(runs, states) if s['state'] not in SKIPPED]
    jobs = plan_jobs(todo) if opts.pack else todo
    noun = 'job' if opts.pack else 'run'
    # The check and job processes import sweeps (the jobs unpickle sweeps.job.RunJob).
    os.environ['PYTHONPATH'] = os.pathsep.join(
        [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    if opts.dry_run:
        print_plan(runs, states, jobs)
        refuse_any(check_runs(jobs, os.getcwd()), len(jobs), 'launching would submit nothing',
                   f'{noun}s')
        return 0
    for run, st in zip(runs, states):
        if st['state'] in SKIPPED:
            print(f'skip ({st["state"]})  {run["name"]}' +
                  (f'  {st["message"]}' if st['state'] == 'queued' else ''))
    packs = f' as {counted(len(jobs), "job")} ({packs_text(jobs)})' if opts.pack and jobs else ''
    print(f'{len(runs)} runs under {opts.root}: {len(todo)} to run on {executor}{packs}, '
          f'{len(runs) - len(todo)} skipped (done, running, queued or diverged)', flush=True)
    if not todo:
        update_manifest(root, runs, executor=executor)
        return 0
    print(f'checking the {counted(len(jobs), noun)} to start (each script with --check-only)',
          flush=True)
    refuse_any(check_runs(jobs, os.getcwd()), len(jobs), 'nothing was submitted', f'{noun}s')
    if executor == 'slurm':
        with undone_on_failure(root):
            update_manifest(root, runs, executor=executor)
            submitted = submit_slurm(jobs, root, opts)
        update_manifest(root, [{'name': r['name'], 'job': j.job_id, 'executor': 'slurm',
                                'log': str(j.paths.stdout)}
                               for job, j in zip(jobs, submitted) for r in runs_of(job)])
        print(f'follow with: python sweep.py --root {shlex.quote(opts.root)} --status')
        return 0
    update_manifest(root, runs, executor=executor)
    code = run_local(jobs, root, opts)
    states = [classify(run, root) for run in runs]
    counts = {s: sum(st['state'] == s for st in states) for s in STATES}
    print(f'{opts.root}: ' + ', '.join(f'{n} {s}' for s, n in counts.items() if n))
    return code

"""sweep.py's command line: parse, expand the grid, then report, plan or launch."""
import argparse
import os
import shlex
import sys

import submitit

import sweeps
from utils.errors import UserError
from .executors import REPO, run_local, slurm_available, submit_slurm
from .grid import check_flags_known, expand, flags_of_scripts, parse_vary, split_fixed
from .show import print_plan, print_status
from .state import MANIFEST, SKIPPED, STATES, classify, runs_of_manifest, update_manifest

def build_parser():
    p = argparse.ArgumentParser(
        prog='sweep.py', description=sweeps.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    # The job processes unpickle sweeps.job.RunJob: let them import it.
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


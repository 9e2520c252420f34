"""--pack: the grid points that differ only by their seed become one job that trains them as one
pack (SCRIPT --seeds S1 S2 ... -c FOLDER_WITH_{seed}; utils/pack.py), one GPU per job.

A grid point keeps its own folder (the same as without --pack), its own entry in sweep.json,
its own state and its own outcome record. Which runs form a pack is decided at each launch,
among the runs to start: a pack starts, or continues, as a whole (utils/setup.py,
check_same_position), so the runs of one group (the same script and the same values of every
other axis) are packed by where they stand: every run without a checkpoint together, every run
whose checkpoint is at the same epoch and batch together. A run standing alone runs alone, as
without --pack. Runs that are skipped (done, running, queued, diverged) are in no job.
"""
import os

from utils.errors import UserError
from utils.records import CHECKPOINT

SEED_FLAG, SEED_KEY = '--manualSeed', 'manualSeed'
TEMPLATE = '{seed}'


def check_packable(root, axes, groups, flags_of):
    """Refuse, in one line, a --pack that cannot work: no manualSeed axis (or one value), seeds
    whose folder names a pack would not write, a script without --seeds, --seeds given."""
    seeds = next((values for flag, _, values in axes if flag == SEED_FLAG), None)
    if seeds is None:
        raise UserError('--pack packs the runs that differ only by their seed: vary it, e.g. '
                        '--vary manualSeed=0,1,2,3')
    if len(seeds) < 2:
        raise UserError(f'--pack: --vary manualSeed={seeds[0]} is one run per group, nothing '
                        'to pack: give two or more seeds, or drop --pack')
    odd = [seed for seed in seeds if not plain_whole_number(seed)]
    if odd:   # a pack names its folders manualSeed=str(seed): '07' would be another folder
        raise UserError(f'--pack: manualSeed value {odd[0]!r}: write each seed as a plain whole '
                        'number (0, 7, 42), as the pack names its run folders')
    if TEMPLATE in root:
        raise UserError(f'--pack: the root {root!r} holds {TEMPLATE}, which the pack fills in '
                        'with each seed: choose another --root')
    for flag in [a[0] for a in axes] + [g[0].split('=', 1)[0] for g in groups]:
        if flag == '--seeds':
            raise UserError('--pack sets each job\'s --seeds itself: drop --seeds and vary '
                            'manualSeed')
    for script, flags in flags_of.items():
        if SEED_FLAG in flags and '--seeds' not in flags:
            raise UserError(f'--pack: {script} has no --seeds flag (its --help): its runs '
                            'cannot be packed')


def plain_whole_number(text):
    """Whether TEXT is a whole number as str(int) writes it: '7', not '07', '+7' or '7.0'."""
    try:
        return text == str(int(text))
    except ValueError:
        return False


def seed_of(run):
    """The run's --manualSeed value, or None (a script without that flag)."""
    argv = run['argv']
    return argv[argv.index(SEED_FLAG) + 1] if SEED_FLAG in argv else None


def group_name(run):
    """The run's name with its seed left open: cifar_one/depth=32/manualSeed={seed}."""
    return '/'.join(f'{SEED_KEY}={TEMPLATE}' if part.startswith(f'{SEED_KEY}=') else part
                    for part in run['name'].split('/'))


def start_point(folder):
    """Where `--resume auto` would start the run in FOLDER: None for a new run, else its
    checkpoint's (epoch, batch); a checkpoint that cannot be read stands on its own (the run
    alone, whose check then says why)."""
    path = os.path.join(folder, CHECKPOINT)
    if not os.path.exists(path):
        return None
    # torch only here: --status and a launch without --pack never read a checkpoint
    from utils.checkpoint import load_checkpoint
    try:
        state = load_checkpoint(path, required=('epoch', 'step'))
    except UserError:
        return ('unreadable', folder)
    return state['epoch'], state['step']


def template_folder(run):
    """The run's folder with its seed left open: ROOT/cifar_one/depth=32/manualSeed={seed}."""
    parts = run['name'].split('/')
    root = run['folder'][:-len(os.path.join(*parts))]
    return root + os.path.join(*group_name(run).split('/'))


def pack_job(runs):
    """One job training RUNS (one group, at one start point) as a pack: the first run's
    command with --seeds instead of its --manualSeed, and its folder with {seed}."""
    first, seeds = runs[0], [seed_of(run) for run in runs]
    folder, argv = template_folder(first), list(first['argv'])
    at = argv.index(SEED_FLAG)
    del argv[at:at + 2]
    at = argv.index('-c')
    argv[at:at + 2] = ['--seeds', *seeds, '-c', folder]
    name = group_name(first).replace(TEMPLATE, '{' + ','.join(seeds) + '}')
    return {'name': name, 'folder': folder, 'script': first['script'], 'argv': argv,
            'epochs': first['epochs'], 'runs': runs}


def plan_jobs(todo):
    """The jobs that start TODO under --pack, in the grid's order: each group's runs standing
    at one start point as one pack job, and every run standing alone as its own job (the
    run itself). Every run of TODO is in exactly one job."""
    groups = {}
    for run in todo:
        if seed_of(run) is None:
            key = (run['name'],)
        else:
            key = (run['script'], group_name(run), start_point(run['folder']))
        groups.setdefault(key, []).append(run)
    return [runs[0] if len(runs) == 1 else pack_job(runs) for runs in groups.values()]


def runs_of(job):
    """The grid points a job trains: a pack's runs, or the run itself."""
    return job.get('runs', [job])


def is_pack(job):
    return 'runs' in job

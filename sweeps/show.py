"""What sweep.py prints: the plan of a launch and the state of every run."""
import os
import shlex

from .pack import is_pack
from .state import SKIPPED, STATES, classify


def shown(path):
    """PATH relative to the current folder when under it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith('..') else relative


def packed(job):
    """' (3 runs packed)' for a pack's job, '' for a run's."""
    return f' ({len(job["runs"])} runs packed)' if is_pack(job) else ''


def epochs_text(state):
    epoch = '-' if state['epoch'] is None else state['epoch']
    epochs = '?' if state['epochs'] is None else state['epochs']
    return f'{epoch}/{epochs}'


def print_status(runs, root, queued):
    """One line per run: its state, the epochs it finished, and who holds it or why it
    stopped; QUEUED: the runs whose job SLURM still holds (sweeps.cli.in_scheduler)."""
    states = [classify(run, root, queued.get(run['name'])) for run in runs]
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


def print_plan(runs, states, jobs=()):
    """One line per run: skipped, or started or resumed with its command; a run of a pack
    (--pack: JOBS) names its pack, and each pack's command follows on a line of its own."""
    todo = [r for r, s in zip(runs, states) if s['state'] not in SKIPPED]
    packs = [job for job in jobs if is_pack(job)]
    pack_of = {run['name']: job for job in packs for run in job['runs']}
    print(f'{len(runs)} runs: {len(todo)} to run, {len(runs) - len(todo)} skipped')
    for run, st in zip(runs, states):
        if st['state'] in SKIPPED:
            print(f'skip ({st["state"]})  {run["folder"]}')
        else:
            verb = 'start' if st['state'] == 'not started' else 'resume'
            pack = pack_of.get(run['name'])
            how = f'in pack {pack["name"]}' if pack else shlex.join(run['argv'])
            print(f'{verb}  {run["folder"]}  {how}')
    for pack in packs:
        print(f'pack  {pack["name"]}  {shlex.join(pack["argv"])}')
    return todo

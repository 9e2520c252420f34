"""What a sweep knows about its runs: ROOT/sweep.json (the manifest), the job outcomes, and
each run's state from its files."""
import csv
import json
import os
from datetime import datetime

from utils.atomic import write_json_atomic
from utils.runlock import lock_holder

MANIFEST, JOBS = 'sweep.json', 'jobs'
STATUS, SUMMARY, ARGS = 'status.json', 'summary.csv', 'args.json'
CHECKPOINT = 'checkpoint.pth.tar'
SKIPPED = ('done', 'running', 'diverged')          # launching leaves these alone
STATES = ('done', 'running', 'preempted', 'interrupted', 'incomplete', 'failed', 'diverged',
          'not started')


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

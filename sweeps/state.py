"""What a sweep knows about its runs: ROOT/sweep.json (the manifest), the job outcomes, what
the scheduler still holds, and each run's state from all of these."""
import csv
import os
from datetime import datetime

from utils.atomic import write_json_atomic
from utils.errors import UserError
from utils.records import ARGS, CHECKPOINT, STATUS, SUMMARY, read_json_record, read_summary_rows
from utils.runlock import lock_holder

MANIFEST, JOBS = 'sweep.json', 'jobs'
SKIPPED = ('done', 'running', 'queued', 'diverged')          # launching leaves these alone
STATES = ('done', 'running', 'queued', 'preempted', 'interrupted', 'incomplete', 'failed',
          'diverged', 'not started')


def now():
    return datetime.now().astimezone().isoformat(timespec='seconds')


def write_json(path, data):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot create {os.path.dirname(path)}: {e.strerror or e}') from None
    write_json_atomic(path, data, indent=1)


def as_int(value):
    """An int from a hand-editable file, or None (bools and other types are not epochs)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# ----------------------------------------------------------------------------- manifest

def read_manifest(root):
    """ROOT/sweep.json, checked: {'runs': [{'name': str, ...}, ...], ...}; empty if absent.
    A file that is there but is no manifest is refused rather than silently replaced."""
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return {'runs': []}
    manifest = read_json_record(path)
    runs = manifest.get('runs') if manifest else None
    if not isinstance(runs, list) or not all(
            isinstance(r, dict) and isinstance(r.get('name'), str) and r['name']
            and all(isinstance(r.get(k), str) for k in ('job', 'executor', 'log') if k in r)
            and (r.get('epochs') is None or as_int(r['epochs']) is not None) for r in runs):
        raise UserError(f'{path} is not a sweep manifest (expected {{"runs": [{{"name": ...}}, '
                        '...]}} as sweep.py writes it): fix it, or move it away and launch the '
                        'grid again with its --scripts and --vary')
    return manifest


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


def slurm_jobs(root):
    """{run name: its last SLURM job id} from ROOT/sweep.json (a run without its own executor
    was written by an older sweep.py, which kept only the last launch's)."""
    manifest = read_manifest(root)
    return {r['name']: r['job'] for r in manifest['runs']
            if r.get('executor', manifest.get('executor')) == 'slurm' and r.get('job')}


# ----------------------------------------------------------------------------- run state

def outcome_path(root, name):
    return os.path.join(os.path.abspath(root), JOBS, 'outcomes', name.replace('/', '--') + '.json')


def completed_epochs(folder):
    """Last epoch of FOLDER/summary.csv, or None."""
    try:
        rows = read_summary_rows(os.path.join(folder, SUMMARY))
        return int(float(rows[-1]['epoch'])) if rows else 0
    except (OSError, csv.Error, KeyError, ValueError, IndexError, TypeError):
        return None


def mtime(path):
    try:
        return os.path.getmtime(path)
    except OSError:
        return None


DIED = 'the process died without a word (killed, out of memory or node failure)'


def classify(run, root, queued=None):
    """{'state', 'epoch', 'epochs', 'message', 'holder'} of one run, from its files and, for a
    run whose job the scheduler still holds, QUEUED: {'job', 'state', 'reason'} (squeue's).

    In order: a held lock means running; reaching the epochs means done; a job in the
    scheduler means queued (or running, while its job starts); then whichever says more about
    the last attempt: the engine's status.json, or, when the engine wrote nothing since the
    last job started (it failed before that), this sweep's record of how the job's run exited.
    The epoch is the last one finished, by status.json (written after every epoch) or
    summary.csv, whichever is further.
    """
    folder = run['folder']
    status = read_json_record(os.path.join(folder, STATUS))
    status_time = mtime(os.path.join(folder, STATUS))
    outcome = read_json_record(outcome_path(root, run['name']))
    epochs = as_int(run.get('epochs')) or as_int((status or {}).get('epochs')) or as_int(
        (read_json_record(os.path.join(folder, ARGS)) or {}).get('epochs'))
    known = [e for e in (as_int((status or {}).get('epoch')), completed_epochs(folder))
             if e is not None]
    epoch = max(known) if known else None
    info = {'epoch': epoch, 'epochs': epochs, 'message': '', 'holder': None}

    holder = lock_holder(folder)
    if holder:
        return {**info, 'state': 'running', 'holder': holder}
    if epochs is not None and (epoch or 0) >= epochs:
        return {**info, 'state': 'done'}
    if queued:
        where = f'job {queued["job"]} {queued["state"]}' + (
            f' ({queued["reason"]})' if queued.get('reason') not in (None, '', 'None') else '')
        state = 'running' if queued['state'] == 'RUNNING' else 'queued'
        return {**info, 'state': state, 'message': where}
    if outcome and (status_time is None or status_time < outcome.get('started_ts', 0)):
        state = outcome.get('state', 'failed')
        return {**info, 'state': 'incomplete' if state == 'done' else state,
                'message': outcome.get('message', '')}
    if status is not None:
        return {**info, **from_status(status, status_time, outcome)}
    if epoch is not None or os.path.exists(os.path.join(folder, CHECKPOINT)):
        return {**info, 'state': 'interrupted', 'message': DIED}
    return {**info, 'state': 'not started'}


def from_status(status, status_time, outcome):
    """State and message from status.json of a run that is not running and not done."""
    state, message = status.get('state', 'failed'), str(status.get('message', ''))
    if state == 'running':     # but nobody holds the lock: the process died
        later = outcome if outcome and outcome.get('ended_ts', 0) >= status_time else {}
        return {'state': 'interrupted', 'message': later.get('message') or DIED}
    if state == 'done':        # done with fewer epochs than the grid now asks
        return {'state': 'incomplete', 'message': message}
    return {'state': state if state in STATES else 'failed', 'message': message}

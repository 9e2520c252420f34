"""A table's results folder, filled from the run folders its sweeps wrote: each finished run's
small files with its final checkpoint's digest (never the checkpoint), and the state of every
run the sweeps hold (runs.json). Runs already there stay: a results folder may hold runs
collected on another machine."""
import hashlib
import json
import os

from sweeps.state import classify, runs_of_manifest
from utils.atomic import write_all_atomic, write_json_atomic
from utils.errors import UserError
from utils.records import ARGS, CHECKPOINT, LOG, RUN_ID, SUMMARY, read_json_record
from .columns import part_root

RUNS, RECORD, PROVENANCE = 'runs', 'runs.json', 'provenance.json'
COPIED = (ARGS, LOG, SUMMARY)
HASH_CHUNK = 1 << 22


def results_folder(results_root, table):
    return os.path.join(results_root, table.name)


def run_path(row, part, run):
    """Where a run sits under runs/ (and in runs.json): ROW[/PART]/SCRIPT/AXES..."""
    return '/'.join([row.name, *([part.name] if part.name else []), run['name']])


def sweep_states(runs_root, table):
    """(path under runs/, the run, its state) of every run the table's sweeps hold."""
    for row in table.rows:
        for part in row.parts:
            root = part_root(runs_root, table, row, part)
            for run in runs_of_manifest(root):
                yield run_path(row, part, run), run, classify(run, root)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(source, args):
    """What a results folder says of a run beyond its own files: the final checkpoint by its
    digest, where the run trained (its last command's device and torch) and on which data."""
    checkpoint = os.path.join(source, CHECKPOINT)
    return {'checkpoint_sha256': sha256_of(checkpoint),
            'checkpoint_bytes': os.path.getsize(checkpoint),
            'device': args.get('device_name', 'not recorded'),
            'torch': args.get('torch_version', 'not recorded'),
            'data_copy': args.get('data_copy') or 'not recorded (official files, as torchvision '
                                                  'checked them before --unofficial-data)',
            'run_id': args.get(RUN_ID), 'run_folder': os.path.abspath(source)}


def copy_run(source, target):
    """Copy a finished run's args.json, log.txt and summary.csv into TARGET with its
    provenance.json; a copy of the same run already there is updated, another run's is never
    replaced."""
    args = read_json_record(os.path.join(source, ARGS))
    if args is None:
        raise UserError(f'{source} has no readable {ARGS}: it cannot be collected')
    held = read_json_record(os.path.join(target, ARGS))
    if held is not None and held.get(RUN_ID) != args.get(RUN_ID):
        raise UserError(f'{target} holds another run (id {held.get(RUN_ID)}) than {source} '
                        f'(id {args.get(RUN_ID)}): move one of them away, then collect again')
    if held is not None and same_file(source, target, SUMMARY) and os.path.exists(
            os.path.join(target, PROVENANCE)):
        return   # collected before, and the run has not changed since
    try:
        files = {}
        for name in COPIED:
            with open(os.path.join(source, name), 'rb') as f:
                files[name] = f.read()
        files[PROVENANCE] = (json.dumps(provenance(source, args), indent=2) + '\n').encode()
        os.makedirs(target, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot collect {source} into {target}: {e.strerror or e}') from None
    # all or none: a summary.csv updated without its provenance.json would pass the test
    # above ever after, keeping the digest of an earlier checkpoint
    write_all_atomic([(os.path.join(target, name), lambda out, data=data: out.write(data))
                      for name, data in files.items()])


def same_file(source, target, name):
    try:
        with open(os.path.join(source, name), 'rb') as a, open(os.path.join(target, name),
                                                                'rb') as b:
            return a.read() == b.read()
    except OSError:
        return False


def read_record(folder):
    """runs.json of a results folder: {'runs': [{'run', 'row', 'state', ...}], ...}."""
    record = read_json_record(os.path.join(folder, RECORD))
    if record is None:
        if os.path.exists(os.path.join(folder, RECORD)):
            raise UserError(f'{os.path.join(folder, RECORD)} is not readable JSON: restore it '
                            '(git checkout) or move it away and collect again')
        return {'runs': []}
    return record


def collect(table, runs_root, results_root, command, now):
    """Copy every finished run of the table's sweeps into its results folder; the record of
    every run's state, merged with the one already there (runs.json)."""
    folder = results_folder(results_root, table)
    entries = {entry['run']: entry for entry in read_record(folder)['runs']}
    for path, run, state in sweep_states(runs_root, table):
        if state['state'] == 'done':
            copy_run(run['folder'], os.path.join(folder, RUNS, *path.split('/')))
        entries[path] = {'run': path, 'row': path.split('/')[0], 'state': state['state'],
                         'epoch': state['epoch'], 'epochs': state['epochs']}
    return {'table': table.name, 'command': command, 'collected': now,
            'runs': [entries[path] for path in sorted(entries)]}


def write_record(folder, record):
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, RECORD), record, indent=1)


def any_finished(record):
    return any(entry['state'] == 'done' for entry in record['runs'])

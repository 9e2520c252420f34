"""report.py's runs: finding run folders and reading each one defensively. A file the report
cannot make sense of (a wrongly typed args.json value, a NaN accuracy, a repeated epoch row)
leaves its run out, with the reason, rather than stopping the report."""
import csv
import json
import math
import os
from dataclasses import dataclass

from methods import METHOD_OF_OLD_RUNS, METHODS, Method
from methods.published import reference_setup
from utils.cli import BOOKKEEPING as ENGINE_BOOKKEEPING
from utils.errors import UserError
from utils.records import (ARGS, CHECKPOINT, PREVIOUS, STATES, STATUS, SUMMARY,
                           read_summary_rows)

GROUP_KEYS = ('method', 'arch', 'depth', 'dataset')
SCHEDULE_KEYS = ('epochs', 'schedule', 'gamma', 'lr')   # must agree to average or compare
DATA_KEYS = ('train_subset', 'data_copy')               # likewise
OFFICIAL = 'official'
# args.json keys that do not change what is trained (utils/cli.py's and the methods' own), and
# KD's teacher path (its teacher_* keys name the teacher).
BOOKKEEPING = ENGINE_BOOKKEEPING | {'teacher'} | Method.bookkeeping
PATH_SUFFIXES = ('_path', '_checkpoint', '_file', '_dir', '_folder')
MEMBERS = ('1', 'ens')   # the networks a report row is made for, in order


class Refusal(UserError):
    """A one-line reason to write nothing and exit 2."""


class Unusable(Exception):
    """Why a run folder is left out of the report."""


@dataclass
class Run:
    folder: str
    args: dict
    rows: list
    method: str
    variant: tuple            # flags differing from the method's reference setup
    unchecked: tuple          # flags with no reference value (not compared with sources)

    @property
    def seed(self):
        return self.args.get('manualSeed')

    @property
    def start(self):
        """The epochs before the first one trained (--start-epoch), from summary.csv."""
        return int(self.rows[0]['epoch']) - 1

    @property
    def schedule(self):
        return tuple(hashable(self.args.get(key)) for key in SCHEDULE_KEYS) + (self.start,)

    @property
    def data(self):
        """(--train-subset or 0, data_copy): runs must agree on both to be averaged."""
        return self.args.get('train_subset') or 0, self.data_copy

    @property
    def data_copy(self):
        """'official', or the sha256 of the unofficial copy of the data the run trained on
        (args.json data_copy). Runs that recorded no copy count as official: before
        --unofficial-data, CIFAR runs could only read the official files."""
        copy = self.args.get('data_copy')
        return OFFICIAL if not copy or copy['official'] else copy['sha256']

    @property
    def group_key(self):
        return (self.method, self.args['arch'], self.args['depth'], self.args['dataset'],
                self.variant + self.unchecked)

    def members(self):
        """The networks a table has rows for: the deployed one ('1'), and the ensemble."""
        return [m for m in MEMBERS if f'test_acc_{m}' in self.rows[0]]

    def errors(self, member):
        return [100.0 - row[f'test_acc_{member}'] for row in self.rows]

    def top5_errors(self, member):
        """Top-5 errors per epoch; None for runs that did not record top-5."""
        key = f'test_acc5_{member}'
        return [100.0 - row[key] for row in self.rows] if key in self.rows[0] else None


def find_run_folders(paths):
    """Folders holding args.json at or below each path. Not searched: hidden folders, and a
    run folder's previous-* folders, where --overwrite and --rewind put the files they
    replace (an earlier run, or a later state of this one)."""
    found = {}
    for path in paths:
        if not os.path.isdir(path):
            raise Refusal(f'{path!r} is not a folder')
        for folder, subfolders, files in os.walk(path):
            in_run = ARGS in files or CHECKPOINT in files
            subfolders[:] = sorted(d for d in subfolders if not d.startswith('.') and not (
                in_run and d.startswith(PREVIOUS)))
            if ARGS in files:
                found.setdefault(os.path.realpath(folder), folder)
    return sorted(found.values())


def read_json(folder, name):
    try:
        with open(os.path.join(folder, name)) as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise Unusable(f'unreadable {name} ({getattr(e, "strerror", None) or e})') from None
    if not isinstance(value, dict):
        raise Unusable(f'unreadable {name} (not a JSON object)')
    return value


def is_count(value):
    return type(value) is int and value >= 0


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def args_problem(args):
    """What makes args.json unusable, or None: the values the report reads must have the
    types the engine writes, and no number may be NaN or infinite."""
    for key in ('dataset', 'arch') + (('method',) if 'method' in args else ()):
        if not (isinstance(args[key], str) and args[key]):
            return f'{key} is {args[key]!r}, not a name'
    for key in ('depth', 'epochs'):
        if not (is_count(args[key]) and args[key] > 0):
            return f'{key} is {args[key]!r}, not a whole number above 0'
    for key in ('start_epoch', 'train_subset', 'manualSeed'):
        if args.get(key) is not None and not is_count(args[key]):
            return f'{key} is {args[key]!r}, not a whole number'
    copy = args.get('data_copy')
    if copy is not None and not (isinstance(copy, dict) and type(copy.get('official')) is bool
                                 and isinstance(copy.get('sha256'), str)):
        return f'data_copy is {copy!r}, not {{"official": true or false, "sha256": "..."}}'
    if 'schedule' in args and not (isinstance(args['schedule'], list)
                                   and all(is_count(m) for m in args['schedule'])):
        return f'schedule is {args["schedule"]!r}, not a list of epochs'
    for key in ('gamma', 'lr'):
        if key in args and not is_number(args[key]):
            return f'{key} is {args[key]!r}, not a number'
    for key, value in args.items():
        if any(isinstance(v, float) and not math.isfinite(v)
               for v in (value if isinstance(value, list) else [value])):
            return f'{key} is {value!r}'
    return None


def read_args(folder):
    args = read_json(folder, ARGS)
    missing = [key for key in ('dataset', 'arch', 'depth', 'epochs') if key not in args]
    if missing:
        raise Unusable(f'unreadable {ARGS} (no {", ".join(missing)})')
    problem = args_problem(args)
    if problem:
        raise Unusable(f'unreadable {ARGS} ({problem})')
    return args


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def read_summary(folder):
    """summary.csv rows with numbers as floats; [] when the run has not finished an epoch."""
    path = os.path.join(folder, SUMMARY)
    if not os.path.exists(path):
        return []
    try:
        rows = [{key: number(value) for key, value in row.items()}
                for row in read_summary_rows(path)]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise Unusable(f'unreadable {SUMMARY} ({e})') from None
    problem = summary_problem(rows)
    if problem:
        raise Unusable(f'unreadable {SUMMARY} ({problem})')
    return rows


def summary_problem(rows):
    """What makes summary.csv rows unusable, or None: every row as long as the header, the
    epoch and every test accuracy a finite number (accuracies in [0, 100]), and the epochs
    whole and consecutive (a repeated or missing epoch row is a damaged file)."""
    for i, row in enumerate(rows, start=1):
        if None in row or None in row.values():
            return f'row {i} has {"more" if None in row else "fewer"} fields than the header'
        for key in ['epoch'] + [k for k in row if k.startswith(('test_acc_', 'test_acc5_'))]:
            value = row.get(key)
            if not isinstance(value, float):
                return f'row {i}: {key} is not a number'
            if not math.isfinite(value) or (key != 'epoch' and not 0 <= value <= 100):
                return f'row {i}: {key} is {value:g}'
    if rows and 'test_acc_1' not in rows[0]:
        return 'no test_acc_1 column'
    for i, row in enumerate(rows, start=1):
        expected = rows[0]['epoch'] + i - 1
        if row['epoch'] != expected or not float(expected).is_integer() or expected < 1:
            return f'row {i}: epoch {row["epoch"]:g} where epoch {expected:g} should be'
    return None


def read_status(folder):
    """status.json, or None for a run written before there was one; a state that is not one
    the engine writes (null, missing, retyped) makes the run unusable, never finished."""
    if not os.path.exists(os.path.join(folder, STATUS)):
        return None
    status = read_json(folder, STATUS)
    if status.get('state') not in STATES:
        raise Unusable(f'unreadable {STATUS} (state is {status.get("state")!r}, not one of '
                       f'{", ".join(STATES)})')
    if not isinstance(status.get('message') or '', str):
        raise Unusable(f'unreadable {STATUS} (message is {status["message"]!r}, not text)')
    return status


def unfinished_reason(args, rows, status):
    """None for a finished run, else why it is skipped."""
    reached, epochs = (int(rows[-1]['epoch']) if rows else 0), args['epochs']
    state = (status or {}).get('state')
    message = (status or {}).get('message') or ''
    if reached > epochs:
        return f'{SUMMARY} reaches epoch {reached}, beyond the {epochs} epochs of {ARGS}'
    if state == 'diverged':
        return f'diverged after epoch {reached}/{epochs}' + (f': {message}' if message else '')
    if reached == epochs and state in (None, 'done'):
        return None
    reason = f'unfinished at epoch {reached}/{epochs}'
    if state:
        reason += f' (state {state}' + (f': {message}' if message else '') + ')'
    return reason


def infer_method(args):
    return args.get('method') or METHOD_OF_OLD_RUNS.get(args['arch'], args['arch'])


def hashable(value):
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return value


def same_value(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def is_variant_key(key):
    if key in BOOKKEEPING or key in GROUP_KEYS or key in SCHEDULE_KEYS or key in DATA_KEYS:
        return False
    return not key.endswith(PATH_SUFFIXES)   # a path (a teacher's file) names no setting


def kind(value):
    """A JSON value's type, whole and decimal numbers alike."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return 'number' if numeric else type(value).__name__


def variant_flags(method, args):
    """(flags off the method's reference setup, flags that setup has no value for); unknown
    flags that are off (False, None, '') count as the default a store_true flag has. A flag
    of another type than its default (a string for a number) makes args.json unusable."""
    reference = reference_setup(method, args.get('arch'))
    variant, unchecked = [], []
    for key in sorted(k for k in args if is_variant_key(k)):
        value = hashable(args[key])
        if reference.get(key) is not None and kind(args[key]) != kind(reference[key]):
            raise Unusable(f'unreadable {ARGS} ({key} is {args[key]!r}, not of the type of its '
                           f'default {reference[key]!r})')
        if key in reference:
            if not same_value(value, reference[key]):
                variant.append((key, value))
        elif value not in (None, False, ''):
            unchecked.append((key, value))
    return tuple(variant), tuple(unchecked)


def load_run(folder):
    """A finished Run, or raise Unusable saying why not."""
    args = read_args(folder)
    rows, status = read_summary(folder), read_status(folder)
    reason = unfinished_reason(args, rows, status)
    if reason:
        raise Unusable(reason)
    method = infer_method(args)
    if method in METHODS:   # keys an older version recorded under another name
        args = METHODS[method].upgrade(args)
    return Run(folder, args, rows, method, *variant_flags(method, args))


def load_runs(folders):
    runs, skipped = [], []
    for folder in folders:
        try:
            runs.append(load_run(folder))
        except Unusable as e:
            skipped.append((folder, ' '.join(str(e).split())))
    return without_copies(runs, skipped)


def without_copies(runs, skipped):
    """A run id seen before is the same run (a copied folder): reported once, from the first
    folder that holds it, when the copies hold the same numbers. Copies whose numbers differ
    (one of them rewound and trained again, or edited) are all left out, saying where they
    differ: the report cannot tell which is the run."""
    by_id = {}
    for run in runs:
        run_id = run.args.get('run_id')
        by_id.setdefault(run_id if isinstance(run_id, str) else id(run), []).append(run)
    kept = []
    for run_id, copies in by_id.items():
        first = copies[0]
        differ = next(((copy, difference(first, copy)) for copy in copies[1:]
                       if difference(first, copy)), None)
        if differ is None:
            kept.append(first)
            skipped += [(copy.folder, f'the same run (id {run_id}) as {first.folder}')
                        for copy in copies[1:]]
            continue
        copy, where = differ
        skipped += [(run.folder, f'copies of one run (id {run_id}) whose numbers differ '
                                 f'({first.folder} and {copy.folder}: {where}); keep the right '
                                 'one and move the others away') for run in copies]
    return kept, skipped


def difference(run, other):
    """Where two runs' summary.csv numbers first differ ('' if nowhere; seconds aside)."""
    if len(run.rows) != len(other.rows):
        return f'{len(run.rows)} epochs against {len(other.rows)}'
    for row, theirs in zip(run.rows, other.rows):
        for key in sorted(set(row) | set(theirs)):
            if key != 'seconds' and row.get(key) != theirs.get(key):
                return (f'{key} at epoch {row["epoch"]:g}: {row.get(key)!r} against '
                        f'{theirs.get(key)!r}')
    return ''

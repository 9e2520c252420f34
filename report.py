"""Summarise finished runs: top-1 error over seeds, beside the published numbers.

    python report.py checkpoints/ [MORE_RUNS_OR_PARENTS...] [--best] [--out report/]
                     [--plots/--no-plots] [--allow-mixed-schedules]

Finds run folders (those holding args.json, searched recursively), skips unfinished,
diverged and unreadable runs, saying why (any file it cannot make sense of, such as a wrongly
typed args.json value, a NaN accuracy or a repeated epoch row, skips its run; a copy of a
run, by its run id, counts once), groups the rest by method, variant flags, arch, depth and
dataset, and prints a Markdown table of top-1 error (100 - accuracy) as mean and
sample std (ddof=1) over seeds, at the last epoch (or with --best at each network's best
epoch, which is selected on the test set). Beside each row: the published value from
methods/published.py, its source, and ours - published. Writes table_{last,best}.md/.csv,
curves.png and bars_{last,best}.png into --out. Refuses (exit 2, nothing written) to average
runs of different schedules or training data, and to put different schedules side by side
unless --allow-mixed-schedules. A run's schedule includes the epochs it trained (a run
started with --start-epoch 1 is not a full run).
"""
import argparse
import csv
import io
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass, field

from methods import METHODS
from utils.atomic import write_atomic
from utils.cli import BOOKKEEPING as ENGINE_BOOKKEEPING, Parser
from utils.errors import UserError
from utils.run_folder import CHECKPOINT, PREVIOUS
from methods.published import PUBLISHED_EPOCHS, lookup, reference_setup

EXIT_REFUSED = 2
ARGS, SUMMARY, STATUS = 'args.json', 'summary.csv', 'status.json'
GROUP_KEYS = ('method', 'arch', 'depth', 'dataset')
SCHEDULE_KEYS = ('epochs', 'schedule', 'gamma', 'lr')   # must agree to average or compare
DATA_KEYS = ('train_subset',)
# args.json keys that do not change what is trained (utils/cli.py's), and KD's teacher path
# (its teacher_* keys name the teacher).
BOOKKEEPING = ENGINE_BOOKKEEPING | {'teacher'}
PATH_SUFFIXES = ('_path', '_checkpoint', '_file', '_dir', '_folder')
MEMBERS = ('1', 'leader', 'ens')          # the networks a report row is made for, in order
METHOD_ORDER = ('baseline', 'kd', 'dml', 'clilr', 'okddip', 'one')
ARCH_METHODS = {'one_resnet': 'one', 'resnet': 'baseline'}   # folders older than `method`
FLAG_NAMES = {'num_branches': 'm', 'temperature': 'T', 'consistency_rampup': 'R',
              'weight_decay': 'wd', 'train_batch': 'batch', 'no_distill': 'no distill'}
BEST_LABEL = 'best epoch, selected on the test set'
TEACHER = 'teacher_'   # a KD run's record of its teacher (methods/kd.py)


class Refusal(Exception):
    """A one-line reason to write nothing and exit 2."""


class Unusable(Exception):
    """Why a run folder is left out of the report."""


# ----------------------------------------------------------------------------- runs

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
        return tuple(self.args.get(key) or 0 for key in DATA_KEYS)

    @property
    def group_key(self):
        return (self.method, self.args['arch'], self.args['depth'], self.args['dataset'],
                self.variant + self.unchecked)

    def members(self):
        return [m for m in MEMBERS if f'test_acc_{m}' in self.rows[0]]

    def errors(self, member):
        return [100.0 - row[f'test_acc_{member}'] for row in self.rows]


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
        with open(path, newline='') as f:
            rows = [{key: number(value) for key, value in row.items()}
                    for row in csv.DictReader(f)]
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
        for key in ['epoch'] + [k for k in row if k.startswith('test_acc_')]:
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
    if not os.path.exists(os.path.join(folder, STATUS)):
        return None
    status = read_json(folder, STATUS)
    for key in ('state', 'message'):
        if not isinstance(status.get(key) or '', str):
            raise Unusable(f'unreadable {STATUS} ({key} is {status[key]!r}, not text)')
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
    return args.get('method') or ARCH_METHODS.get(args['arch'], args['arch'])


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
    return not (key.startswith(TEACHER) and key.endswith(PATH_SUFFIXES))


def kind(value):
    """A JSON value's type, whole and decimal numbers alike."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return 'number' if numeric else type(value).__name__


def variant_flags(method, args):
    """(flags off the method's reference setup, flags that setup has no value for); unknown
    flags that are off (False, None, '') count as the default a store_true flag has. A flag
    of another type than its default (a string for a number) makes args.json unusable."""
    reference = reference_setup(method)
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
    folder that holds it."""
    first, kept = {}, []
    for run in runs:
        run_id = run.args.get('run_id')
        if isinstance(run_id, str) and run_id in first:
            skipped.append((run.folder, f'the same run (id {run_id}) as {first[run_id]}'))
        else:
            first.setdefault(run_id, run.folder)
            kept.append(run)
    return kept, skipped


# ----------------------------------------------------------------------------- groups

def group_runs(runs):
    groups = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    return dict(sorted(groups.items(), key=lambda item: sort_key(item[0])))


def sort_key(key):
    method, arch, depth, dataset, flags = key
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (dataset, backbone(arch), depth, order, method, bool(flags), str(flags))


def backbone(arch):
    """The plain network a method trains ('one_resnet' -> 'resnet')."""
    for method in list(METHODS) + ['cl']:
        if arch.startswith(method + '_'):
            return arch[len(method) + 1:]
    return arch


def network_name(arch, depth):
    name = backbone(arch)
    return f'{"ResNet" if name == "resnet" else name}-{depth}'


def format_value(value):
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, tuple):
        return ','.join(format_value(v) for v in value)
    return str(value)


def format_flag(key, value):
    name = FLAG_NAMES.get(key, key)
    if value is True:
        return name.replace('_', ' ')
    if value is False:
        return 'no ' + name.replace('_', ' ')
    return f'{name}={format_value(value)}'


def method_label(method, member, flags):
    title = METHODS[method].title if method in METHODS else str(method)
    title += {'ens': '-E', 'leader': ' (leader)'}.get(member, '')
    return title + (f' ({", ".join(flag_texts(flags))})' if flags else '')


def flag_texts(flags):
    """Each flag as a label shows it; a KD run's teacher_* flags as one 'teacher ...'."""
    teacher = {k[len(TEACHER):]: v for k, v in flags if k.startswith(TEACHER)}
    texts = [format_flag(k, v) for k, v in flags if not k.startswith(TEACHER)]
    return ([teacher_text(teacher)] if teacher else []) + texts


def teacher_text(teacher):
    """e.g. 'teacher ONE-E ResNet-32 at epoch 300', 'teacher ONE ResNet-32 branch 2 at epoch
    300': the network a KD run distilled from."""
    method, member = teacher.get('method'), str(teacher.get('member'))
    text = 'teacher ' + method_label(method, member, ())
    if 'arch' in teacher:
        text += f' {network_name(str(teacher["arch"]), teacher.get("depth"))}'
    if member not in ('1', 'ens', 'None'):
        text += f' {METHODS[method].label(member) if method in METHODS else member}'
    return text + (f' at epoch {teacher["epoch"]}' if 'epoch' in teacher else '')


def group_name(key):
    method, arch, depth, dataset, flags = key
    return f'{method_label(method, "1", flags)} {network_name(arch, depth)} {dataset}'


def describe_schedule(run):
    epochs, milestones, gamma, lr, start = run.schedule
    text = f'{epochs} epochs, lr {format_value(lr)}'
    if milestones:
        text += f', x{format_value(gamma)} at {"/".join(map(str, milestones))}'
    if start:
        text += f', trained from epoch {start + 1} (--start-epoch {start})'
    subset = run.data[0]
    return text + (f', first {subset} training images' if subset else '')


def check_within_groups(groups):
    for key, runs in groups.items():
        for other in runs[1:]:
            if (other.schedule, other.data) != (runs[0].schedule, runs[0].data):
                raise Refusal(f'runs of {group_name(key)} differ in schedule or training data: '
                              f'{runs[0].folder} ({describe_schedule(runs[0])}) vs '
                              f'{other.folder} ({describe_schedule(other)}); refusing to '
                              'average them')


def check_across_groups(groups, allow_mixed):
    firsts = [(key, runs[0]) for key, runs in groups.items()]
    for key, run in firsts[1:]:
        first_key, first = firsts[0]
        if (run.schedule, run.data) != (first.schedule, first.data) and not allow_mixed:
            raise Refusal(f'{group_name(first_key)} ({describe_schedule(first)}) and '
                          f'{group_name(key)} ({describe_schedule(run)}) differ in schedule or '
                          'training data; pass --allow-mixed-schedules to report them side '
                          'by side')


def duplicate_seed_warnings(groups):
    warnings = []
    for key, runs in groups.items():
        seeds = [run.seed for run in runs if run.seed is not None]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
            folders = ', '.join(run.folder for run in runs if run.seed == seed)
            warnings.append(f'{group_name(key)}: seed {seed} appears more than once ({folders})')
    return warnings


# ----------------------------------------------------------------------------- table

@dataclass
class Result:
    key: tuple
    member: str
    runs: list
    errors: list
    epochs_selected: list
    published: list = field(default_factory=list)

    @property
    def n(self):
        return len(self.errors)

    @property
    def mean(self):
        return statistics.fmean(self.errors)

    @property
    def std(self):
        """Sample std (ddof=1); None for a single run."""
        return statistics.stdev(self.errors) if self.n > 1 else None

    @property
    def diff(self):
        return self.mean - self.published[0].error if self.published else None


def selected_error(run, member, best):
    """(error, 1-based epoch) at the last epoch, or at this network's best test epoch."""
    errors = run.errors(member)
    index = min(range(len(errors)), key=errors.__getitem__) if best else len(errors) - 1
    return errors[index], int(run.rows[index]['epoch'])


def summarise(groups, best):
    results = []
    for key, runs in groups.items():
        method, arch, depth, dataset, _ = key
        members = [m for m in runs[0].members() if all(m in run.members() for run in runs)]
        for member in members:
            picked = [selected_error(run, member, best) for run in runs]
            published = lookup(method, runs[0].variant, backbone(arch), depth, dataset, member)
            results.append(Result(key, member, runs, [e for e, _ in picked],
                                  [epoch for _, epoch in picked], published))
    return results


def result_note(result):
    run, notes = result.runs[0], []
    if result.published and run.args['epochs'] != PUBLISHED_EPOCHS:
        notes.append(f'{run.args["epochs"]} epochs, published {PUBLISHED_EPOCHS}')
    if run.data[0]:
        notes.append(f'trained on the first {run.data[0]} images')
    if result.published and run.unchecked:
        flags = ', '.join(format_flag(k, v) for k, v in run.unchecked)
        notes.append(f'source setup not compared for: {flags}')
    if result.published and result.published[0].note:
        notes.append(result.published[0].note)
    return '; '.join(notes)


def fmt(value, signed=False):
    if value is None:
        return '-'
    return f'{value:+.2f}' if signed else f'{value:.2f}'


def fmt_published(entry):
    return fmt(entry.error) + (f' ± {entry.std:.2f}' if entry.std is not None else '')


def source_label(entry):
    return entry.source + (' [secondary source]' if entry.secondary else '')


def source_numbers(results):
    """{source label: footnote number}, numbered in order of first use."""
    labels = []
    for entry in (e for result in results for e in result.published):
        if source_label(entry) not in labels:
            labels.append(source_label(entry))
    return {label: i for i, label in enumerate(labels, start=1)}


def markdown(results, skipped, best, mixed):
    numbers = source_numbers(results)
    selection = BEST_LABEL if best else 'last epoch'
    columns = ['dataset', 'network', 'method', 'n', f'error % ({selection})', 'std',
               'published', 'ours - published', 'source', 'note']
    if mixed:
        columns.insert(4, 'schedule')
    lines = [f'## Top-1 error (%), {selection}', '',
             f'Mean and sample std (ddof=1) over n seeds; std "-" when n = 1. '
             f'Published values are for {PUBLISHED_EPOCHS} epochs; "ours - published" < 0 '
             'means a lower error than published.', '']
    if best:
        lines += ['**Best epoch selected on the test set** (each network its own best epoch): '
                  'an optimistic number, not a held-out selection.', '']
    if not mixed and results:
        lines += [f'Schedule of every run: {describe_schedule(results[0].runs[0])}.', '']
    lines += ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for result in results:
        lines.append('| ' + ' | '.join(markdown_cells(result, numbers, mixed)) + ' |')
    if numbers:
        lines += ['', 'Sources:'] + [f'- [{i}] {label}' for label, i in numbers.items()]
    if skipped:
        lines += ['', f'Skipped runs ({len(skipped)}):']
        lines += [f'- {folder}: {reason}' for folder, reason in skipped]
    return '\n'.join(lines) + '\n'


def markdown_cells(result, numbers, mixed):
    method, arch, depth, dataset, _ = result.key
    run, first = result.runs[0], (result.published or [None])[0]
    note = result_note(result)
    others = [f'also {fmt_published(e)} [{numbers[source_label(e)]}]'
              for e in result.published[1:]]
    cells = [dataset, network_name(arch, depth),
             method_label(method, result.member, run.variant + run.unchecked),
             str(result.n), fmt(result.mean), fmt(result.std),
             fmt_published(first) if first else '', fmt(result.diff, signed=True) if first else '',
             f'[{numbers[source_label(first)]}]' if first else '',
             '; '.join(filter(None, [note] + others))]
    if mixed:
        cells.insert(4, describe_schedule(run))
    return [cell.replace('|', '/') for cell in cells]


CSV_COLUMNS = ['dataset', 'network', 'arch', 'depth', 'method', 'member', 'label', 'variant',
               'n', 'seeds', 'selection', 'error_mean', 'error_std', 'selected_epochs',
               'epochs', 'schedule', 'train_subset', 'published_error', 'published_std',
               'published_source', 'published_secondary', 'diff', 'note', 'other_published',
               'runs']


def csv_row(result, best):
    method, arch, depth, dataset, _ = result.key
    run, first = result.runs[0], (result.published or [None])[0]
    return {
        'dataset': dataset, 'network': network_name(arch, depth), 'arch': arch, 'depth': depth,
        'method': method, 'member': result.member,
        'label': method_label(method, result.member, run.variant + run.unchecked),
        'variant': json.dumps(dict(run.variant + run.unchecked)),
        'n': result.n, 'seeds': ';'.join(str(r.seed) for r in result.runs),
        'selection': BEST_LABEL if best else 'last epoch',
        'error_mean': round(result.mean, 4),
        'error_std': '' if result.std is None else round(result.std, 4),
        'selected_epochs': ';'.join(map(str, result.epochs_selected)),
        'epochs': run.args['epochs'], 'schedule': describe_schedule(run),
        'train_subset': run.data[0],
        'published_error': first.error if first else '',
        'published_std': '' if first is None or first.std is None else first.std,
        'published_source': first.source if first else '',
        'published_secondary': first.secondary if first else '',
        'diff': '' if first is None else round(result.diff, 4),
        'note': result_note(result),
        'other_published': '; '.join(f'{fmt_published(e)} ({source_label(e)})'
                                     for e in result.published[1:]),
        'runs': ';'.join(r.folder for r in result.runs),
    }


def csv_text(results, best):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(csv_row(result, best) for result in results)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- plots

def plot_label(result):
    method, arch, depth, dataset, _ = result.key
    run = result.runs[0]
    return f'{network_name(arch, depth)} {method_label(method, result.member, run.variant + run.unchecked)}'


def by_dataset(results):
    datasets = {}
    for result in results:
        datasets.setdefault(result.key[3], []).append(result)
    return datasets


def figure_bytes(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=90)
    return buffer.getvalue()


LINE_STYLES = {'1': '-', 'leader': ':', 'ens': '--'}


def error_curves_png(results):
    """Mean test error per epoch over seeds, with a band of ± sample std (n > 1); one colour
    per group, solid for the single network, dashed for the ensemble."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    datasets = by_dataset(results)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, (dataset, members) in zip(axes[0], datasets.items()):
        colours, tops = {}, []
        for result in members:
            colour = colours.setdefault(result.key, f'C{len(colours) % 10}')
            curves = np.array([run.errors(result.member) for run in result.runs])
            epochs = [int(row['epoch']) for row in result.runs[0].rows]
            mean = curves.mean(axis=0)
            ax.plot(epochs, mean, LINE_STYLES[result.member], color=colour,
                    label=f'{plot_label(result)} (n={result.n})')
            if result.n > 1:
                std = curves.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
            tops.append(mean[len(mean) // 10:].max())   # leave out the first tenth's high errors
        ax.set_ylim(top=min(100.0, max(tops) + 1.0))
        ax.set(xlabel='epoch', ylabel='test top-1 error (%)',
               title=f'{dataset}: mean over seeds, band ± sample std')
        ax.legend(fontsize=7)
    fig.tight_layout()
    data = figure_bytes(fig)
    plt.close(fig)
    return data


def error_bars_png(results, best):
    """Mean error per row with ± sample std error bars (none for n = 1); published values as
    black crosses."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = by_dataset(results)
    fig, axes = plt.subplots(1, len(datasets), squeeze=False,
                             figsize=(max(5.0, 1.2 * len(results) + 2), 5))
    for ax, (dataset, members) in zip(axes[0], datasets.items()):
        x = range(len(members))
        bars = ax.bar(x, [r.mean for r in members], capsize=4,
                      yerr=[math.nan if r.std is None else r.std for r in members])
        ax.bar_label(bars, [f'n={r.n}' for r in members], label_type='center', fontsize=7,
                     color='white')
        published = [(i, r.published[0].error) for i, r in enumerate(members) if r.published]
        if published:
            ax.plot(*zip(*published), 'kx', markersize=9, label='published')
            ax.legend(fontsize=8)
        ax.set_xticks(list(x), [plot_label(r) for r in members], rotation=30, ha='right',
                      fontsize=7)
        ax.set(ylabel='test top-1 error (%)',
               title=f'{dataset}, {BEST_LABEL if best else "last epoch"} (± std)')
    fig.tight_layout()
    data = figure_bytes(fig)
    plt.close(fig)
    return data


# ----------------------------------------------------------------------------- output

def outputs(results, skipped, best, mixed, plots):
    """{file name: contents}, all built before anything is written."""
    which = 'best' if best else 'last'
    files = {f'table_{which}.md': markdown(results, skipped, best, mixed),
             f'table_{which}.csv': csv_text(results, best)}
    if plots:
        files['curves.png'] = error_curves_png(results)
        files[f'bars_{which}.png'] = error_bars_png(results, best)
    return files


def write_outputs(folder, files):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise Refusal(f'cannot write the report into {folder!r}: {e.strerror or e}') from None
    for name, data in files.items():
        data = data.encode() if isinstance(data, str) else data
        try:
            write_atomic(os.path.join(folder, name), lambda f: f.write(data))
        except UserError as e:
            raise Refusal(str(e)) from None


# ----------------------------------------------------------------------------- main

def build_parser():
    p = Parser(prog='report.py', description=__doc__.splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('folders', nargs='+', metavar='RUN_FOLDER',
                   help='run folders, or folders searched recursively for them')
    p.add_argument('--best', action='store_true',
                   help="each network's best test epoch instead of the last (selected on the "
                        'test set: optimistic)')
    p.add_argument('--out', default='report', help='folder for the tables and plots')
    p.add_argument('--plots', action=argparse.BooleanOptionalAction, default=True,
                   help='write curves.png and bars_*.png')
    p.add_argument('--allow-mixed-schedules', action='store_true',
                   help='report groups trained with different schedules or data side by side')
    return p


def build_report(args):
    runs, skipped = load_runs(find_run_folders(args.folders))
    if not runs:
        reasons = '; '.join(f'{folder}: {reason}' for folder, reason in skipped)
        raise Refusal('no finished run to report' + (f' ({reasons})' if reasons else
                                                     ' (no folder holds args.json)'))
    groups = group_runs(runs)
    check_within_groups(groups)
    check_across_groups(groups, args.allow_mixed_schedules)
    mixed = len({(runs[0].schedule, runs[0].data) for runs in groups.values()}) > 1
    results = summarise(groups, args.best)
    return outputs(results, skipped, args.best, mixed, args.plots), duplicate_seed_warnings(groups)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        files, warnings = build_report(args)
        write_outputs(args.out, files)
    except Refusal as e:
        print(f'report.py: error: {" ".join(str(e).split())}', file=sys.stderr)
        return EXIT_REFUSED
    for warning in warnings:
        print(f'report.py: warning: {warning}', file=sys.stderr)
    print(files[f'table_{"best" if args.best else "last"}.md'], end='')
    return 0


if __name__ == '__main__':
    sys.exit(main())

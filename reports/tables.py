"""report.py's tables: Markdown for people, CSV for programs; one row per group and network."""
import csv
import io
import json

from methods import METHODS
from methods.networks import network_name
from methods.published import IMAGENET_EPOCHS, PUBLISHED_EPOCHS
from .groups import describe_copy, describe_schedule
from .runs import OFFICIAL

BEST_LABEL = 'best epoch, selected on the test set'


def result_note(result):
    run, notes = result.runs[0], []
    epochs = result.published[0].epochs if result.published else None
    if epochs and run.args['epochs'] != epochs:
        notes.append(f'{run.args["epochs"]} epochs, published {epochs}')
    if run.data[0]:
        notes.append(f'trained on the first {run.data[0]} images')
    if result.published and run.unchecked:
        flags = ', '.join(METHODS[run.method].describe_flags(run.unchecked)
                          if run.method in METHODS else (f'{k}={v}' for k, v in run.unchecked))
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


def shows_top5(results):
    """Top-5 columns in the Markdown table: where an ImageNet run is in it (every run records
    top-5 since it was added; CIFAR tables keep the papers' top-1 only)."""
    return any(result.key[3] == 'imagenet' for result in results)


def shows_data(results):
    """A data column where a run trained on an unofficial copy of its dataset."""
    return any(result.runs[0].data_copy != OFFICIAL for result in results)


def markdown(results, skipped, best, mixed):
    numbers = source_numbers(results)
    selection = BEST_LABEL if best else 'last epoch'
    top5, data = shows_top5(results), shows_data(results)
    columns = ['dataset', 'network', 'method', 'n', f'error % ({selection})', 'std',
               'published', 'ours - published', 'source', 'note']
    if top5:
        columns[6:6] = ['top-5 error %', 'top-5 std']
    if mixed:
        columns.insert(4, 'schedule')
    if data:
        columns.insert(3, 'data')
    lines = [f'## Top-1 error (%), {selection}', '',
             f'Mean and sample std (ddof=1) over n seeds; std "-" when n = 1. '
             f'Published values are for {PUBLISHED_EPOCHS} epochs (ImageNet: '
             f'{IMAGENET_EPOCHS}); "ours - published" < 0 '
             'means a lower error than published.', '']
    if data:
        lines += ['**Unofficial data**: rows marked "unofficial copy" trained on a copy of the '
                  "dataset whose checksums are not the official release's (--unofficial-data; "
                  'its sha256 is in each run\'s args.json, data_copy).', '']
    if best:
        lines += ['**Best epoch selected on the test set** (each network its own best epoch): '
                  'an optimistic number, not a held-out selection.', '']
    if not mixed and results:
        lines += [f'Schedule of every run: {describe_schedule(results[0].runs[0])}.', '']
    lines += ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for result in results:
        lines.append('| ' + ' | '.join(markdown_cells(result, numbers, mixed, top5, data))
                     + ' |')
    if numbers:
        lines += ['', 'Sources:'] + [f'- [{i}] {label}' for label, i in numbers.items()]
    if skipped:
        lines += ['', f'Skipped runs ({len(skipped)}):']
        lines += [f'- {folder}: {reason}' for folder, reason in skipped]
    return '\n'.join(lines) + '\n'


def markdown_cells(result, numbers, mixed, top5=False, data=False):
    _, arch, depth, dataset, _ = result.key
    run, first = result.runs[0], (result.published or [None])[0]
    note = result_note(result)
    others = [f'also {fmt_published(e)} [{numbers[source_label(e)]}]'
              for e in result.published[1:]]
    cells = [dataset, network_name(arch, depth),
             result.label, str(result.n), fmt(result.mean), fmt(result.std),
             fmt_published(first) if first else '', fmt(result.diff, signed=True) if first else '',
             f'[{numbers[source_label(first)]}]' if first else '',
             '; '.join(filter(None, [note] + others))]
    if top5:
        cells[6:6] = [fmt(result.top5_mean), fmt(result.top5_std)]
    if mixed:
        cells.insert(4, describe_schedule(run))
    if data:
        cells.insert(3, describe_copy(run.data_copy))
    return [cell.replace('|', '/') for cell in cells]


CSV_COLUMNS = ['dataset', 'network', 'arch', 'depth', 'method', 'member', 'label', 'variant',
               'n', 'seeds', 'selection', 'error_mean', 'error_std', 'top5_error_mean',
               'top5_error_std', 'selected_epochs',
               'epochs', 'schedule', 'train_subset', 'data_copy', 'data_sha256',
               'published_error', 'published_std',
               'published_source', 'published_secondary', 'diff', 'note', 'other_published',
               'runs']


def csv_row(result, best):
    method, arch, depth, dataset, _ = result.key
    run, first = result.runs[0], (result.published or [None])[0]
    return {
        'dataset': dataset, 'network': network_name(arch, depth), 'arch': arch, 'depth': depth,
        'method': method, 'member': result.member,
        'label': result.label,
        'variant': json.dumps(dict(run.variant + run.unchecked)),
        'n': result.n, 'seeds': ';'.join(str(r.seed) for r in result.runs),
        'selection': BEST_LABEL if best else 'last epoch',
        'error_mean': round(result.mean, 4),
        'error_std': '' if result.std is None else round(result.std, 4),
        'top5_error_mean': '' if result.top5_mean is None else round(result.top5_mean, 4),
        'top5_error_std': '' if result.top5_std is None else round(result.top5_std, 4),
        'selected_epochs': ';'.join(map(str, result.epochs_selected)),
        'epochs': run.args['epochs'], 'schedule': describe_schedule(run),
        'train_subset': run.data[0],
        'data_copy': 'official' if run.data_copy == OFFICIAL else 'unofficial',
        'data_sha256': (run.args.get('data_copy') or {}).get('sha256', ''),
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

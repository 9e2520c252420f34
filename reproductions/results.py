"""A results folder read back: each row's runs summarised by report.py's own code, judged
(verdict.py), and written as README.md for people, comparison.csv and report.csv for programs.
Everything is computed from the folder alone (runs/ and runs.json), so it prints the same
anywhere."""
import csv
import io
import os
from dataclasses import dataclass

from reports.groups import check_within_groups, describe_copy, group_runs, summarise
from reports.runs import find_run_folders, load_runs
from reports.tables import csv_text, fmt, markdown, source_label, source_numbers
from utils.atomic import write_text_atomic
from utils.errors import UserError
from .collect import RECORD, RUNS, read_record, results_folder
from .columns import row_plan
from .listing import published_text
from .verdict import MIN_SEEDS, TOLERANCE, column_check, gain_checks, is_baseline, judge

README, COMPARISON, REPORT = 'README.md', 'comparison.csv', 'report.csv'
DEFINITION = (
    f"**Reproduced** means, for a row: each column's mean top-1 error (last epoch, over at "
    f'least {MIN_SEEDS} seeds) within {TOLERANCE:.1f} point of its published number, and the '
    "gain of each method's deployed network (ONE: branch 1) over the baseline within "
    f'{TOLERANCE:.1f} point of the published gain, every run trained with its method\'s published '
    'settings. **Not reproduced**: all that was measured, and a number is further off. '
    '**Incomplete**: runs or seeds are missing. **Not judged**: the runs were trained '
    'otherwise, or methods/published.py lacks the numbers to compare with.')


@dataclass
class RowOutcome:
    row: object
    plan: object      # columns.RowPlan: what the row trains and its published numbers
    results: list     # reports.groups.Result of the row's finished runs
    skipped: list     # (folder, reason) of run folders report.py could not use
    verdict: object
    asked: int
    finished: int

    @property
    def network(self):
        return self.plan.columns[0].network


def row_results(folder, row):
    """The row's finished runs in FOLDER/runs/ROW, summarised as report.py does, their
    folders relative to FOLDER so that the text is the same on every machine."""
    runs_dir = os.path.join(folder, RUNS, row.name)
    if not os.path.isdir(runs_dir):
        return [], []
    runs, skipped = load_runs(find_run_folders([runs_dir]))
    for run in runs:
        run.folder = os.path.relpath(run.folder, folder)
    skipped = [(os.path.relpath(path, folder), reason) for path, reason in skipped]
    groups = group_runs(runs)
    check_within_groups(groups)
    return summarise(groups, best=False), skipped


def judge_rows(table, folder, record):
    outcomes = []
    for row in table.rows:
        results, skipped = row_results(folder, row)
        entries = [e for e in record['runs'] if e['row'] == row.name]
        finished = sum(e['state'] == 'done' for e in entries)
        outcomes.append(RowOutcome(row, row_plan(table, row), results, skipped,
                                   judge(results, len(entries), finished), len(entries),
                                   finished))
    return outcomes


def numbered_sources(outcomes):
    """{source label: footnote number}: report.py's numbering of the finished runs' sources
    (so the embedded report's footnotes agree), then those of rows still awaited."""
    numbers = source_numbers([result for o in outcomes for result in o.results])
    for column in (c for o in outcomes for c in o.plan.columns if c.published):
        numbers.setdefault(source_label(column.published[0]), len(numbers) + 1)
    return numbers


def yes_no(passed):
    return 'yes' if passed else 'no'


def mean_text(result):
    return fmt(result.mean) + (f' ± {result.std:.2f}' if result.std is not None else '')


def comparison_lines(outcome, numbers):
    """A row's Markdown table: every column, ours beside the published, then the gains."""
    lines = ['| | n | top-1 error %, mean ± std | published | ours - published | '
             f'within {TOLERANCE:.1f} |', '|---|---|---|---|---|---|']
    for result in outcome.results:
        check = column_check(result)
        published = (f'{fmt(check.published)} [{numbers[source_label(check.source)]}]'
                     if check else '-')
        lines.append(f'| {result.label} | {result.n} | {mean_text(result)} | {published} | '
                     f'{fmt(check.diff, signed=True) if check else "-"} | '
                     f'{yes_no(check.passed) if check else "-"} |')
    baseline = next((r for r in outcome.results if is_baseline(r) and r.published), None)
    for check in gain_checks(outcome.results, baseline) if baseline else []:
        lines.append(f'| {check.what} | | {fmt(check.ours)} | {fmt(check.published)} | '
                     f'{fmt(check.diff, signed=True)} | {yes_no(check.passed)} |')
    return lines


def conditions(outcome):
    """Data, devices and torch of the row's runs, as their args.json recorded them."""
    runs = [run for result in outcome.results for run in result.runs]
    data = sorted({describe_copy(run.data_copy) for run in runs})
    devices = sorted({run.args.get('device_name', 'not recorded') for run in runs})
    torches = sorted({run.args.get('torch_version', 'not recorded') for run in runs})
    return (f'{outcome.finished} of {outcome.asked} runs finished. Data: {", ".join(data)}. '
            f'Device: {", ".join(devices)}. Torch: {", ".join(torches)}.')


def readme(table, record, outcomes):
    results = [result for outcome in outcomes for result in outcome.results]
    skipped = [item for outcome in outcomes for item in outcome.skipped]
    numbers = numbered_sources(outcomes)
    lines = [f'# {table.name}', '', f'{table.title} (`-d {table.dataset}`).', '',
             f'Collected by `{record["command"]}` on {record["collected"]}. '
             f'`python reproduce.py {table.name} --show` prints this page again from this '
             f'folder; `python report.py results/{table.name}/runs` prints the report alone.',
             '', DEFINITION, '', '| row | network | verdict | why |', '|---|---|---|---|']
    lines += [f'| {o.row.name} | {o.network} | **{o.verdict.state}** | {o.verdict.reason} |'
              for o in outcomes]
    for outcome in outcomes:
        lines += ['', f'## {outcome.network} (`--rows {outcome.row.name}`): '
                  f'{outcome.verdict.state}', '']
        if outcome.results:
            lines += [conditions(outcome), ''] + comparison_lines(outcome, numbers)
        else:
            done = (f'{outcome.finished} of {outcome.asked} runs finished.' if outcome.asked
                    else 'Not run yet.')
            lines += [f'{done} Published top-1 error %: '
                      f'{published_text(outcome.plan.columns, numbers)}.']
    lines += ['', 'Sources:'] + [f'- [{i}] {label}' for label, i in numbers.items()]
    if results:
        mixed = len({(r.runs[0].schedule, r.runs[0].data) for r in results}) > 1
        lines += ['', "# report.py's table of every finished run", '',
                  markdown(results, skipped, False, mixed).rstrip('\n')]
    lines += ['', '# Files', '',
              f'- `{RUNS}/ROW/SCRIPT/.../manualSeed=S/`: each finished run\'s `args.json` (its '
              'flags, data copy, device and torch), `log.txt`, `summary.csv` and '
              '`provenance.json` (the final checkpoint\'s sha256 and size, the device, torch, '
              'the data copy and where the run folder was). Checkpoints are not kept here.',
              f'- `{RECORD}`: every run the table\'s sweeps hold, with its state when collected.',
              f'- `{COMPARISON}`: the comparisons above, one line each; `{REPORT}`: report.py\'s '
              'CSV.']
    return '\n'.join(lines) + '\n'


COMPARISON_COLUMNS = ['table', 'row', 'network', 'what', 'n', 'mean', 'std', 'published',
                      'published_source', 'diff', 'within', 'verdict', 'reason']


def comparison_csv(table, outcomes):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COMPARISON_COLUMNS, lineterminator='\n')
    writer.writeheader()
    for outcome in outcomes:
        common = {'table': table.name, 'row': outcome.row.name, 'network': outcome.network,
                  'verdict': outcome.verdict.state, 'reason': outcome.verdict.reason}
        for result in outcome.results:
            check = column_check(result)
            writer.writerow({**common, 'what': result.label, 'n': result.n,
                             'mean': round(result.mean, 4),
                             'std': '' if result.std is None else round(result.std, 4),
                             'published': check.published if check else '',
                             'published_source': source_label(check.source) if check else '',
                             'diff': round(check.diff, 4) if check else '',
                             'within': check.passed if check else ''})
        baseline = next((r for r in outcome.results if is_baseline(r) and r.published), None)
        for check in gain_checks(outcome.results, baseline) if baseline else []:
            writer.writerow({**common, 'what': check.what, 'mean': round(check.ours, 4),
                             'published': round(check.published, 4),
                             'diff': round(check.diff, 4), 'within': check.passed})
    return buffer.getvalue()


def render(table, results_root, record):
    """{file name: text} of the table's results folder, from runs/ and RECORD."""
    folder = results_folder(results_root, table)
    outcomes = judge_rows(table, folder, record)
    results = [result for outcome in outcomes for result in outcome.results]
    return {README: readme(table, record, outcomes), COMPARISON: comparison_csv(table, outcomes),
            REPORT: csv_text(results, False)}


def write_files(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, text in files.items():
        write_text_atomic(os.path.join(folder, name), text)


def read_back(table, results_root):
    """The folder's pages as render() makes them from the folder alone."""
    folder = results_folder(results_root, table)
    if not os.path.exists(os.path.join(folder, RECORD)):
        raise UserError(f'no results of {table.name} in {folder!r} (no {RECORD}): run '
                        f'`python reproduce.py {table.name}` first, or pass --results')
    return render(table, results_root, read_record(folder))

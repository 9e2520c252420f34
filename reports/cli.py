"""report.py's command line: find and read the runs, group, check, summarise, write."""
import argparse
import os
import sys

from utils.atomic import write_atomic
from utils.errors import Parser, UserError, one_line_errors
from .groups import (check_across_groups, check_within_groups, duplicate_seed_warnings,
                     group_runs, summarise)
from .plots import error_bars_png, error_curves_png
from .runs import Refusal, find_run_folders, load_runs
from .tables import csv_text, markdown

DESCRIPTION = 'Summarise finished runs: top-1 error over seeds, beside the published numbers.'


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


def build_parser():
    p = Parser(prog='report.py', description=DESCRIPTION,
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
    return one_line_errors('report.py', lambda: report(args))


def report(args):
    files, warnings = build_report(args)
    write_outputs(args.out, files)
    for warning in warnings:
        print(f'report.py: warning: {warning}', file=sys.stderr)
    print(files[f'table_{"best" if args.best else "last"}.md'], end='')
    return 0

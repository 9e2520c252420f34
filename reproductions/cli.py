"""reproduce.py's command line: list, run, collect or show a table. Every anticipated failure
is one line and exit status 2."""
import argparse
import os
import shlex
import sys

import reproductions
from sweeps.cli import at_least, split_argv
from sweeps.state import now
from utils.errors import Parser, UserError, one_line_errors
from .collect import RECORD, any_finished, collect, results_folder, write_record
from .launch import check_sweep_options, run_sweeps
from .listing import listing
from .results import README, read_back, render, write_files
from .tables import TABLES

RUNS_ROOT, RESULTS_ROOT = os.path.join('checkpoints', 'reproduce'), 'results'


def seed(text):
    """An argparse type: a seed the scripts take, in [0, 2**32)."""
    value = at_least(0)(text)
    if value >= 2**32:
        raise argparse.ArgumentTypeError(f'must be in [0, 2**32), got {value}')
    return value


def build_parser():
    p = Parser(prog='reproduce.py', description=reproductions.__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter,
               usage='%(prog)s TABLE [--rows ROW ...] [--seeds S ...] [--data-dir DIR] '
                     "[--unofficial-data] [sweep.py's options] [-- TRAINING FLAGS ...]\n"
                     '       %(prog)s TABLE --collect | --show\n       %(prog)s --list')
    p.add_argument('table', nargs='?', help='a table that --list names')
    what = p.add_mutually_exclusive_group()
    what.add_argument('--list', action='store_true',
                      help='name every table, what it trains and its published numbers')
    what.add_argument('--collect', action='store_true',
                      help='train nothing: collect the finished runs into the results folder')
    what.add_argument('--show', action='store_true',
                      help='print the results folder\'s page again, from that folder alone')
    p.add_argument('--rows', nargs='+', metavar='ROW', help='run these rows only (default: all)')
    p.add_argument('--seeds', nargs='+', type=seed, default=[0, 1], metavar='S',
                   help='seeds of every run (default: 0 1)')
    p.add_argument('--data-dir', default='./data', help='given to every run')
    p.add_argument('--unofficial-data', action='store_true',
                   help='given to every run: train on a copy of CIFAR whose checksums are not '
                        "the official release's (docs/REPRODUCE.md)")
    p.add_argument('--runs', default=RUNS_ROOT,
                   help='folder of the run folders (checkpoints: not for the repository)')
    p.add_argument('--results', default=RESULTS_ROOT,
                   help='folder of the results folders (small text files, for the repository)')
    return p


def pick_table(name):
    if name is None:
        raise UserError('name a table (python reproduce.py --list shows them)')
    if name not in TABLES:
        raise UserError(f'unknown table {name!r}: choose from {", ".join(TABLES)} (the table '
                        'comes first; python reproduce.py --list says what each trains)')
    return TABLES[name]


def pick_rows(table, names):
    known = [row.name for row in table.rows]
    unknown = [name for name in names or [] if name not in known]
    if unknown:
        raise UserError(f'--rows {unknown[0]}: {table.name} has rows {", ".join(known)}')
    if names and len(set(names)) < len(names):
        raise UserError('--rows names a row twice')
    return [row for row in table.rows if not names or row.name in names]


def collect_and_write(table, opts, argv):
    """Collect the finished runs into the results folder and print its page; nothing is
    written while no run has finished."""
    folder = results_folder(opts.results, table)
    record = collect(table, opts.runs, opts.results,
                     shlex.join(['python', 'reproduce.py', *argv]), now())
    if not any_finished(record) and not os.path.exists(os.path.join(folder, RECORD)):
        print(f'reproduce.py: no run of {table.name} has finished yet, so nothing is written '
              f'into {folder}; `python reproduce.py {table.name} --status` follows them')
        return
    write_record(folder, record)
    files = render(table, opts.results, record)
    write_files(folder, files)
    print(files[README], end='')
    print(f'reproduce.py: wrote {folder}', flush=True)


def reproduce(opts, sweep_tokens, extra, argv):
    if opts.list:
        print(listing(), end='')
        return 0
    table = pick_table(opts.table)
    if (opts.show or opts.collect) and (sweep_tokens or extra):
        raise UserError(f'{" ".join(sweep_tokens + extra)}: --show and --collect train nothing '
                        "and take no sweep.py options or training flags")
    if opts.show:
        print(read_back(table, opts.results)[README], end='')
        return 0
    rows = pick_rows(table, opts.rows)
    code = 0
    if not opts.collect:
        sweep = check_sweep_options(sweep_tokens)
        if len(set(opts.seeds)) < len(opts.seeds):
            raise UserError('--seeds names a seed twice')
        data_flags = ['--data-dir', opts.data_dir] + (['--unofficial-data']
                                                      if opts.unofficial_data else [])
        code = run_sweeps(opts.runs, table, rows, opts.seeds, sweep_tokens, data_flags, extra)
        if sweep.status or sweep.dry_run or code >= 128:
            return code
    collect_and_write(table, opts, argv)
    return code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own, extra = split_argv(argv)
    opts, sweep_tokens = build_parser().parse_known_args(own)
    return one_line_errors('reproduce.py', lambda: reproduce(opts, sweep_tokens, extra, argv))

"""Running a table: one sweep (sweeps/, as sweep.py runs it) per part of each row asked for,
in turn. Every run is `SCRIPT ... -c FOLDER --resume auto` in a folder that follows from the
table, row and seed alone, so the same command continues where it stopped."""
import os

from sweeps.cli import build_parser as sweep_parser
from sweeps.cli import run_naming_errors, split_argv
from utils.errors import UserError
from .columns import REPO, SEED_AXIS, fixed_flags, part_root

RESERVED = ('--root', '--scripts', '--vary')   # reproduce.py sets them for every sweep


def check_sweep_options(tokens):
    """sweep.py's own options given to reproduce.py (--executor, --partition, --time,
    --max-parallel, --dry-run, --status, ...), checked before anything runs."""
    for token in tokens:
        if token.split('=', 1)[0] in RESERVED:
            raise UserError(f'{token.split("=", 1)[0]}: reproduce.py sets the sweeps\' '
                            '--root, --scripts and --vary itself (choose the folder with --runs)')
    parser = sweep_parser()
    parser.prog = 'reproduce.py'
    return parser.parse_args(['--root', '.', *tokens])


def sweep_argv(runs_root, table, row, part, seeds, sweep_tokens, data_flags, extra):
    """sweep.py's command line for one part of a row."""
    seed_axis = f'{SEED_AXIS}={",".join(map(str, seeds))}'
    return ['--root', part_root(runs_root, table, row, part),
            '--scripts', *[os.path.join(REPO, s) for s in part.scripts],
            '--vary', *part.vary, seed_axis, *sweep_tokens,
            '--', *fixed_flags(table, row, part, data_flags, extra)]


def run_sweeps(runs_root, table, rows, seeds, sweep_tokens, data_flags, extra):
    """Each part's sweep in turn; the worst exit status. A sweep stopped by a signal stops
    the table there (the same command continues it)."""
    worst = 0
    for row in rows:
        for part in row.parts:
            argv = sweep_argv(runs_root, table, row, part, seeds, sweep_tokens, data_flags, extra)
            where = row.name + (f'/{part.name}' if part.name else '')
            print(f'reproduce.py: {table.name} {where}: sweep in {argv[1]}', flush=True)
            own, fixed = split_argv(argv)
            code = run_naming_errors(sweep_parser().parse_args(own), fixed)
            if code >= 128:
                return code
            worst = max(worst, code)
    return worst

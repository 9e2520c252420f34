"""A table's runs before any is trained: the sweeps' own grids (sweeps/grid.py), each run's
command parsed by its script's parser, and the published numbers report.py will put beside it
(keyed as reports/runs.py keys a finished run)."""
import os
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from methods import METHODS
from methods.networks import backbone_of, network_name
from methods.published import lookup, reference_setup
from reports.groups import method_label
from reports.runs import MEMBERS, variant_flags
from sweeps.grid import expand, parse_vary, parser_flags, split_fixed
from utils.cli import build_parser, parse_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_AXIS = 'manualSeed'


def method_of(script):
    """cifar_NAME.py trains METHODS[NAME] (docs/DEVELOPING.md: a method's entry script)."""
    return METHODS[os.path.basename(script)[len('cifar_'):-len('.py')]]


@lru_cache(maxsize=None)
def script_flags(script):
    """The flags sweep.py reads from SCRIPT's --help (sweeps.grid.help_flags), each mapped to
    the option it names, from the parser the script builds (no process run): read-only, as
    it is cached."""
    method = method_of(script)
    return MappingProxyType(parser_flags(build_parser(method.usage, method)))


def part_root(runs_root, table, row, part):
    return os.path.join(runs_root, table.name, row.name, *([part.name] if part.name else []))


def fixed_flags(table, row, part, data_flags=(), extra=()):
    """Every run's flags: the table's dataset, the row's network, the part's own, then the
    data's and the user's (last, so that they win)."""
    return ['-d', table.dataset, *row.network, *part.flags, *data_flags, *extra]


def part_runs(runs_root, table, row, part, seeds, data_flags=(), extra=()):
    """The part's runs as sweep.py will expand them: dicts of name, folder, script, argv."""
    scripts = [os.path.join(REPO, s) for s in part.scripts]
    axes = parse_vary([*part.vary, f'{SEED_AXIS}={",".join(map(str, seeds))}'])
    groups = split_fixed(fixed_flags(table, row, part, data_flags, extra))
    flags_of = {s: script_flags(s) for s in scripts}
    return expand(part_root(runs_root, table, row, part), scripts, axes, groups, flags_of, REPO)


def run_args(run):
    """The flags a run of the grid will have: its script's parser over its command, and the
    flags it leaves unset (a network's width) as its method's reference setup on that network
    has them. (Resolving them as the run will builds the network: seconds for ResNet-110;
    the run's own --check-only does that.)"""
    method = method_of(run['script'])
    args = parse_flags(build_parser('', method), run['argv'][2:])
    args.method = method.name
    for key, value in reference_setup(method.name, args.arch).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


@dataclass
class Column:
    label: str        # as report.py labels it: 'baseline', 'ONE', 'ONE-E (m=2)'
    network: str      # 'ResNet-32'
    published: list   # methods.published entries, the one compared with first


@dataclass
class RowPlan:
    columns: list         # Column, in the order the row's runs report them
    runs_per_seed: int
    epochs: dict          # {script: the epochs its runs train}


def row_plan(table, row, extra=()):
    """What the row's runs will train and report, with the published numbers beside it."""
    columns, runs, epochs = {}, 0, {}
    for part in row.parts:
        for run in part_runs(REPO, table, row, part, [0], extra=extra):
            args = run_args(run)
            runs += 1
            epochs[os.path.basename(run['script'])] = args.epochs
            variant, unchecked = variant_flags(args.method, vars(args))
            members = METHODS[args.method].columns(args)
            for member in (m for m in MEMBERS if m in members):
                label = method_label(args.method, member, variant + unchecked)
                found = lookup(args.method, variant, backbone_of(args.arch), args.depth,
                               args.dataset, member)
                columns.setdefault(label, Column(label, network_name(args.arch, args.depth),
                                                 found))
    return RowPlan(list(columns.values()), runs, epochs)

"""The grid: --vary axes and fixed flags, checked against each script's --help, expanded
into runs with deterministic folders and commands."""
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from itertools import product

from utils.errors import UserError

RESERVED = {'-c', '--checkpoint', '--resume', '--overwrite', '-e', '--evaluate', '--init-from',
            '--rewind'}

def flag_of(name):
    """'depth' -> '--depth', 'd' -> '-d', '--lr' -> '--lr'."""
    if name.startswith('-'):
        return name
    return f'-{name}' if len(name) == 1 else f'--{name}'


def parse_vary(specs):
    """['depth=32,110', ...] -> [(flag, key, [value, ...]), ...] in the order given."""
    axes, seen = [], set()
    for spec in specs:
        name, sep, values = spec.partition('=')
        values = [v.strip() for v in values.split(',')] if sep else []
        if not name or not values or not all(values):
            raise UserError(f'--vary {spec!r}: expected NAME=V1,V2,... (e.g. depth=32,110)')
        flag = flag_of(name)
        if flag in RESERVED:
            raise UserError(f'--vary {name}: the sweep sets -c and --resume itself')
        if flag in seen:
            raise UserError(f'--vary {name} is given twice')
        seen.add(flag)
        axes.append((flag, safe(name.lstrip('-')), values))
    return axes


def is_flag(token):
    return token.startswith('-') and not re.fullmatch(r'-\d[\d.e+-]*', token)


def split_fixed(tokens):
    """['--epochs', '300', '--schedule', '151', '225'] -> [['--epochs', '300'], [...]]."""
    groups = []
    for token in tokens:
        if is_flag(token):
            flag = token.split('=', 1)[0]
            if flag in RESERVED:
                raise UserError(f'{flag}: the sweep sets -c FOLDER and --resume auto itself')
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            raise UserError(f'fixed flags must start with a flag, got {token!r}')
    return groups


def safe(text):
    """A path component: letters, digits and ._+- kept, anything else becomes '_'."""
    return re.sub(r'[^A-Za-z0-9._+-]', '_', text)


def help_flags(script, cwd):
    """The flags SCRIPT's --help lists, each mapped to the option it names (its first long
    spelling: '-d' and '--dataset' to '--dataset'). Any script: it is run with --help."""
    proc = subprocess.run([sys.executable, script, '--help'], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ['(no output)'])[-1]
        raise UserError(f'{script} --help failed (exit {proc.returncode}): {last}')
    return flags_of_help(proc.stdout)


def parser_flags(parser):
    """What help_flags reads from the --help of a script that parses its flags with PARSER,
    without running the script: the same help text, formatted in this process. For the
    scripts whose parser can be built here (reproductions/ plans its sweeps with it)."""
    return flags_of_help(parser.format_help())


def flags_of_help(text):
    """A --help text's flags: argparse's option lines map each spelling to the option it
    names; any other word that looks like a flag (one the help text mentions) to itself."""
    flags = {flag: flag for flag in re.findall(r'(?<![\w-])(--?[A-Za-z][\w-]*)', text)}
    for line in text.splitlines():   # argparse's option lines: '  -d {...}, --dataset {...}  help'
        if line.startswith('  -'):
            names = re.findall(r'(?:^|, )(--?[A-Za-z][\w-]*)', line[2:].split('  ')[0])
            option = next((n for n in names if n.startswith('--')), names[0] if names else None)
            flags.update({name: option for name in names})
    return flags


def flags_of_scripts(scripts, cwd):
    with ThreadPoolExecutor(max_workers=len(scripts)) as pool:
        return dict(zip(scripts, pool.map(lambda s: help_flags(s, cwd), scripts)))


def check_flags_known(axes, groups, flags_of):
    for script, flags in flags_of.items():
        if '--check-only' not in flags:
            raise UserError(f'{script} has no --check-only flag: sweep.py runs the entry scripts '
                            'of this repository (it checks every run with it before submitting)')
    for flag in [a[0] for a in axes] + [g[0].split('=', 1)[0] for g in groups]:
        if not any(flag in flags for flags in flags_of.values()):
            raise UserError(f'{flag} is not a flag of {", ".join(flags_of)} (see their --help)')


def check_each_flag_once(axes, groups, flags_of):
    """A varied flag also given after -- (or varied twice, under two of its names: d and
    dataset) would reach a script's runs as two values, the last silently winning (--vary
    depth=8 -- --depth 14 built --depth 14 --depth 8): refused. A flag given twice after --
    is the user's own command line, which the script reads as it would anywhere."""
    varied = [(a[0], f'--vary {a[1]}={",".join(a[2])}') for a in axes]
    fixed = [(g[0].split('=', 1)[0], f'-- {shlex.join(g)}') for g in groups]
    for script, flags in flags_of.items():
        seen = {}
        for flag, source in varied + fixed:
            option = flags.get(flag)
            if option in seen and seen[option].startswith('--vary'):
                raise UserError(f'{option} is given twice ({seen[option]} and {source}): a '
                                f'run of {script} would get both, the last one silently '
                                'winning; give it once (to vary it, drop it after --)')
            if option is not None:
                seen.setdefault(option, source)


def target_epochs(argv):
    """The --epochs a command asks for, or None if it leaves the script's default."""
    epochs = None
    for i, token in enumerate(argv):
        if token == '--epochs' and i + 1 < len(argv):
            epochs = argv[i + 1]
        elif token.startswith('--epochs='):
            epochs = token.split('=', 1)[1]
    try:
        return int(epochs) if epochs is not None else None
    except ValueError:
        return None


def words(flag, value):
    """A --vary value as the words of the command ('151 225' -> ['151', '225'])."""
    try:
        return shlex.split(value)
    except ValueError as e:  # an unbalanced quote
        raise UserError(f'--vary {flag.lstrip("-")}: value {value!r}: {e}') from None


def expand(root, scripts, axes, groups, flags_of, cwd):
    """Every run of the grid: dicts of name (folder under root), folder, script, argv, epochs.

    Deterministic: scripts in the order given, then the product of the axes in the order
    given. Axes and fixed flags a script does not list are left out for that script.
    """
    root = os.path.abspath(root)
    runs = []
    for script in scripts:
        flags = flags_of[script]
        own_axes = [a for a in axes if a[0] in flags]
        fixed = [t for g in groups if g[0].split('=', 1)[0] in flags for t in g]
        script_path = os.path.abspath(os.path.join(cwd, script))
        stem = safe(os.path.splitext(os.path.basename(script))[0])
        for values in product(*[a[2] for a in own_axes]):
            parts = [stem] + [f'{key}={safe(value)}'
                              for (_, key, _), value in zip(own_axes, values)]
            name = '/'.join(parts)
            folder = os.path.join(root, *parts)
            varied = [t for (flag, _, _), value in zip(own_axes, values)
                      for t in [flag, *words(flag, value)]]
            argv = [sys.executable, script_path, *fixed, *varied, '-c', folder, '--resume', 'auto']
            runs.append({'name': name, 'folder': folder, 'script': script_path, 'argv': argv,
                         'epochs': target_epochs(argv)})
    names = [r['name'] for r in runs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UserError(f'two runs of the grid would share the folder {clash[0]!r}; '
                        'use values that differ in letters or digits')
    return runs

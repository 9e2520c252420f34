"""Every method through its entry script, parametrised over the registry (methods/__init__.py):
train, resume bitwise, evaluate with -e, export member 1, refuse another method's checkpoint,
refuse bad flags in one line. A method added to the registry is covered here; its own test
file keeps only what is particular to it (its formula, its model, its own flags)."""
import json

import pytest

import cifar_baseline
import export_branch
from conftest import assert_same_run, entry, load, run_flags, tiny
from methods import METHODS
from utils.cli import build_parser

NAMES = list(METHODS)


@pytest.fixture(scope='module', params=NAMES)
def trained(request, fashion_root, teacher, tmp_path_factory):
    """(method name, run folder): two epochs of the method, as a user runs them."""
    name = request.param
    run = tmp_path_factory.mktemp(name) / 'straight'
    flags = run_flags(name, teacher, '--epochs', 2)
    assert entry(name).main(tiny(fashion_root, run, *flags)) == 0
    return name, run


def columns(name):
    return METHODS[name].columns(METHODS[name].defaults())


def test_every_method_has_its_entry_script():
    assert all(callable(entry(name).main) for name in NAMES)


def test_two_epochs_write_the_run_and_its_columns(trained):
    name, run = trained
    state = load(run / 'checkpoint.pth.tar')
    assert (state['method'], state['epoch'], state['step']) == (name, 2, 0)
    assert json.loads((run / 'args.json').read_text())['method'] == name
    assert json.loads((run / 'status.json').read_text())['state'] == 'done'
    names = columns(name)
    header = (run / 'log.txt').read_text().splitlines()[0].split('\t')
    assert header == [f'{s}Acc_{"e" if n == "ens" else n}' for n in names for s in 'TV']
    for row in state['history']:
        assert all(0 <= row[f'test_acc_{n}'] <= 100 for n in names)
    # the checkpoint records the method's identity: what a resume or -e checks
    for key, value in METHODS[name].identity(METHODS[name].defaults(**state['args'])).items():
        assert state[key] == value, key


def test_resume_is_bitwise_identical(trained, fashion_root, teacher, tmp_path):
    name, run = trained
    split = tmp_path / 'split'
    flags = run_flags(name, teacher)
    assert entry(name).main(tiny(fashion_root, split, '--epochs', 1, *flags)) == 0
    assert entry(name).main(tiny(fashion_root, split, '--epochs', 2, '--resume', 'auto',
                                 *flags)) == 0
    assert_same_run(run / 'checkpoint.pth.tar', split / 'checkpoint.pth.tar')
    assert (run / 'log.txt').read_text() == (split / 'log.txt').read_text()


def test_evaluate_prints_every_column_as_trained(trained, fashion_root, teacher, tmp_path, capsys):
    name, run = trained
    checkpoint = run / 'checkpoint.pth.tar'
    capsys.readouterr()
    assert entry(name).main(tiny(fashion_root, tmp_path / 'unused', '-e', '--resume', checkpoint,
                                 *run_flags(name, teacher))) == 0
    out = capsys.readouterr().out.splitlines()
    row = load(checkpoint)['history'][-1]
    for column in columns(name):
        label = METHODS[name].label(column)
        line = next(l for l in out if l.strip().startswith(label))
        assert line.split()[-1] == f'{row[f"test_acc_{column}"]:.2f}', label
    # the numbers form one column, whatever the labels' lengths
    assert len({len(line) for line in out[1:]}) == 1, out
    assert not (tmp_path / 'unused').exists()


def test_exported_member_evaluates_as_a_plain_resnet(trained, fashion_root, tmp_path, capsys):
    name, run = trained
    checkpoint = run / 'checkpoint.pth.tar'
    out = tmp_path / 'member1.pth.tar'
    assert export_branch.main([str(checkpoint), '--branch', '1', '-o', str(out)]) == 0
    exported = load(out)
    assert (exported['method'], exported['arch'], 'optimizer' in exported) == ('baseline', 'resnet', False)
    capsys.readouterr()
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume', out)) == 0
    accuracy = float(capsys.readouterr().out.splitlines()[1].split()[-1])
    assert accuracy == pytest.approx(load(checkpoint)['history'][-1]['test_acc_1'], abs=0.005)
    assert export_branch.main([str(checkpoint), '--branch', '9', '-o', str(tmp_path / 'b9')]) == 2


def test_another_methods_checkpoint_is_refused(trained, fashion_root, teacher, tmp_path, capsys):
    name, run = trained
    other = NAMES[(NAMES.index(name) + 1) % len(NAMES)]
    capsys.readouterr()
    argv = tiny(fashion_root, tmp_path / 'x', '-e', '--resume', run / 'checkpoint.pth.tar',
                *run_flags(other, teacher))
    assert entry(other).main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'mismatch: method' in err[0], err


def float_flags(name):
    """Every flag of the method's script that takes a number with a fraction: the shared
    ones, the networks' and the method's own."""
    return [next(o for o in a.option_strings if o.startswith('--'))
            for a in build_parser('', METHODS[name])._actions if a.type is float]


def bad_flags(name):
    """Flags every method must refuse (as its defaults say it has them), with the flag the
    one line must name: every number flag given NaN or infinity, and values out of range."""
    defaults = METHODS[name].defaults()
    cases = [(['--depth', 9], '--depth'), (['--no-such-flag'], '--no-such-flag'),
             (['--momentum', 1], '--momentum'), (['--momentum', 1.5], '--momentum')]
    cases += [([f'{flag}={value}'], flag) for flag in float_flags(name)
              for value in ('nan', 'inf')]
    if hasattr(defaults, 'temperature'):
        cases.append((['--temperature', 0], '--temperature'))
    if METHODS[name].count_key:
        flag = '--' + METHODS[name].count_key.replace('_', '-')
        cases.append(([flag, 0], flag))
    if hasattr(defaults, 'consistency_rampup'):
        cases.append((['--consistency_rampup', -1], '--consistency_rampup'))
    return cases


@pytest.mark.parametrize('name', NAMES)
def test_bad_flags_are_one_line_and_write_nothing(name, fashion_root, teacher, tmp_path, capsys):
    needed = run_flags(name, teacher)
    for flags, named in bad_flags(name):
        run = tmp_path / 'r'
        try:
            code = entry(name).main(tiny(fashion_root, run, *needed, *flags))
        except SystemExit as e:  # argparse's own errors: one line too (utils/cli.Parser)
            code = e.code
        assert code == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], (flags, err)
        assert not run.exists(), flags

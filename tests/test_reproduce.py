"""reproduce.py: a tiny run of a real table through the sweeps' local executor on generated
CIFAR-100 files (an unofficial copy), its results folder, read back by --show and report.py;
a relaunch that continues; the verdicts on hand-made results folders; the listing; one-line
errors. The sweeps' --help and --check-only run in this process (their own functions, over
the same parsers) to keep the test short; the runs are real processes."""
import csv
import errno
import hashlib
import json
import os

import pytest

import report
from conftest import ROOT
from fakedata import write_cifar100
from methods import published
from reproductions import cli
from reproductions.collect import copy_run
from reproductions.columns import method_of, script_flags
from sweep_helpers import sweep_in_this_process
from sweeps.grid import help_flags   # the real one: fast_sweeps patches sweeps.grid's
from utils import atomic
from utils.errors import UserError

TINY_RUN = ['--', '--epochs', '1', '--train-subset', '32']


@pytest.fixture(scope='module')
def fast_sweeps():
    with pytest.MonkeyPatch.context() as patch:
        sweep_in_this_process(patch)
        yield


def reproduce(capsys, *argv):
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope='module')
def tiny_table(tmp_path_factory, fast_sweeps):
    """one-cifar100's ResNet-32 row, seed 0, 1 epoch of 32 images, on generated CIFAR-100
    files (not the official release: --unofficial-data), run as a user would."""
    root = tmp_path_factory.mktemp('reproduce')
    write_cifar100(str(root / 'data'), num_train=40, num_test=20)
    argv = ['one-cifar100', '--rows', 'resnet-32', '--seeds', '0', '--data-dir',
            str(root / 'data'), '--unofficial-data', '--runs', str(root / 'runs'),
            '--results', str(root / 'results'), '--executor', 'local', '--max-parallel', '2',
            '--cpus-per-run', '1', *TINY_RUN]
    code = cli.main(argv)
    return root, argv, code


def test_a_tiny_table_runs_through_the_sweeps_and_writes_its_results(tiny_table):
    root, _, code = tiny_table
    assert code == 0
    folder = root / 'results' / 'one-cifar100'
    runs = {p.parent.relative_to(folder / 'runs').as_posix()
            for p in (folder / 'runs').rglob('args.json')}
    assert runs == {'resnet-32/cifar_baseline/manualSeed=0', 'resnet-32/cifar_one/manualSeed=0'}
    for run in runs:
        copied, trained = folder / 'runs' / run, root / 'runs' / 'one-cifar100' / run
        assert sorted(os.listdir(copied)) == ['args.json', 'log.txt', 'provenance.json',
                                              'summary.csv']
        assert (copied / 'summary.csv').read_bytes() == (trained / 'summary.csv').read_bytes()
        provenance = json.loads((copied / 'provenance.json').read_text())
        checkpoint = (trained / 'checkpoint.pth.tar').read_bytes()
        assert provenance['checkpoint_sha256'] == hashlib.sha256(checkpoint).hexdigest()
        assert provenance['device'].startswith('CPU') and provenance['torch']
        assert provenance['data_copy']['official'] is False
        assert json.loads((copied / 'args.json').read_text())['unofficial_data'] is True
    assert not [p for p in folder.rglob('*') if p.suffix in ('.tar', '.pth')]   # no checkpoint
    record = json.loads((folder / 'runs.json').read_text())
    assert [(e['run'], e['state']) for e in record['runs']] == [
        ('resnet-32/cifar_baseline/manualSeed=0', 'done'), ('resnet-32/cifar_one/manualSeed=0',
                                                            'done')]


def test_the_results_page_gives_the_verdict_beside_the_published_numbers(tiny_table):
    root = tiny_table[0]
    page = (root / 'results' / 'one-cifar100' / 'README.md').read_text()
    assert ('| resnet-32 | ResNet-32 | **not judged** | trained otherwise than published: '
            'epochs 1 (published setting: 300), the first 32 training images |') in page
    assert '| resnet-110 | ResNet-110 | **incomplete** | not run yet |' in page
    assert 'Not run yet. Published top-1 error %: baseline 25.33 [1], ONE 21.62 [1], ONE-E -.' \
        in page
    assert 'Data: unofficial copy (sha256 ' in page
    for label, number in (('baseline', '31.18'), ('ONE', '26.61'), ('ONE-E', '24.63')):
        line = next(line for line in page.splitlines() if line.startswith(f'| {label} | 1 |'))
        assert f' | {number} [1] | ' in line and line.endswith(' | no |'), line
    assert f'- [1] {published.ONE_PAPER}' in page
    rows = list(csv.DictReader(open(root / 'results' / 'one-cifar100' / 'comparison.csv')))
    assert [(r['what'], r['published']) for r in rows] == [
        ('baseline', '31.18'), ('ONE', '26.61'), ('ONE-E', '24.63'),
        ('gain of ONE over the baseline', '4.57')]


def test_the_results_folder_reads_back(tiny_table, capsys, tmp_path):
    root = tiny_table[0]
    folder = root / 'results' / 'one-cifar100'
    code, out, err = reproduce(capsys, 'one-cifar100', '--show', '--results', root / 'results')
    assert code == 0, err
    assert out == (folder / 'README.md').read_text()
    code = report.main([str(folder / 'runs'), '--out', str(tmp_path / 'report'), '--no-plots'])
    out = capsys.readouterr().out
    assert code == 0
    assert '| cifar100 | ResNet-32 | ONE-E | unofficial copy (sha256 ' in out


def test_the_same_command_continues_and_collects_again(tiny_table, capsys):
    root, argv, _ = tiny_table
    folder = root / 'results' / 'one-cifar100'
    before = {p: p.read_bytes() for p in (folder / 'runs').rglob('*') if p.is_file()}
    code, out, err = reproduce(capsys, *argv)
    assert code == 0, err
    assert out.count('skip (done)') == 2 and 'started' not in out
    assert {p: p.read_bytes() for p in (folder / 'runs').rglob('*') if p.is_file()} == before
    code, out, err = reproduce(capsys, *argv[:argv.index('--max-parallel')], '--status')
    assert code == 0, err
    assert out.count('done') >= 2 and 'not started' not in out


# ----------------------------------------------------------------------------- verdicts

def write_run(folder, method, seed, errors, epochs=300, dataset='cifar100', copy=None):
    """A finished run as the engine writes it: the method's published settings, ResNet-32 on
    DATASET (an unofficial COPY of it: its sha256), and its last epoch's errors ({'1': ...,
    'ens': ...})."""
    os.makedirs(folder)
    args = published.reference_setup(method)
    args.update(method=method, dataset=dataset, depth=32, epochs=epochs, manualSeed=seed,
                run_id=f'run-{method}-{seed}')
    if copy:
        args['data_copy'] = {'official': False, 'sha256': copy}
    (folder / 'args.json').write_text(json.dumps(args))
    columns = [f'test_acc_{m}' for m in errors]
    lines = ['epoch,' + ','.join(columns)] + [
        f'{e},' + ','.join(f'{100 - errors[m]:.4f}' for m in errors) for e in range(1, epochs + 1)]
    (folder / 'summary.csv').write_text('\n'.join(lines) + '\n')


def results_folder(root, baseline, one, extra_states=(), dataset='cifar100', copy=None):
    """results/one-DATASET with the ResNet-32 row's runs: BASELINE [error per seed], ONE
    [(branch 1, ensemble) per seed], and runs.json (plus EXTRA_STATES: unfinished runs)."""
    folder = root / f'one-{dataset}'
    entries = []
    for stem, method, values in (('cifar_baseline', 'baseline', baseline),
                                 ('cifar_one', 'one', one)):
        for seed, value in enumerate(values):
            errors = {'1': value} if method == 'baseline' else {'1': value[0], 'ens': value[1]}
            name = f'resnet-32/{stem}/manualSeed={seed}'
            write_run(folder / 'runs' / name, method, seed, errors, dataset=dataset, copy=copy)
            entries.append({'run': name, 'row': 'resnet-32', 'state': 'done'})
    entries += [{'run': f'resnet-32/x/{i}', 'row': 'resnet-32', 'state': s}
                for i, s in enumerate(extra_states)]
    (folder / 'runs.json').write_text(json.dumps({'command': 'python reproduce.py ...',
                                                  'collected': 'today', 'runs': entries}))
    return root


VERDICTS = {
    'reproduced': ([31.0, 31.4], [(26.5, 24.4), (26.9, 24.8)], (),
                   '**reproduced** | every number within 1.0 point of the published |'),
    'not reproduced': ([31.0, 31.4], [(28.5, 24.4), (28.9, 24.8)], (),
                       '**not reproduced** | more than 1.0 point off: ONE 28.70 vs published '
                       '26.61; gain of ONE over the baseline 2.50 vs published 4.57 |'),
    'a run unfinished': ([31.0, 31.4], [(26.5, 24.4), (26.9, 24.8)], ('running',),
                         '**incomplete** | 4 of 5 runs finished |'),
    'one seed': ([31.0], [(26.5, 24.4)], (),
                 '**incomplete** | baseline has 1, ONE has 1, ONE-E has 1 seed(s); a verdict '
                 'needs 2 |'),
}


@pytest.mark.parametrize('case', sorted(VERDICTS))
def test_each_verdict_as_the_issue_defines_it(case, tmp_path, capsys):
    baseline, one, states, expected = VERDICTS[case]
    results = results_folder(tmp_path, baseline, one, states)
    code, out, err = reproduce(capsys, 'one-cifar100', '--show', '--results', results)
    assert code == 0, err
    assert f'| resnet-32 | ResNet-32 | {expected}' in out
    if case == 'reproduced':
        assert '| ONE | 2 | 26.70 ± 0.28 | 26.61 [1] | +0.09 | yes |' in out
        assert '| gain of ONE over the baseline | | 4.50 | 4.57 | -0.07 | yes |' in out


def test_a_verdict_on_an_unofficial_copy_of_the_data_says_so(tmp_path, capsys):
    results = results_folder(tmp_path, [31.0, 31.4], [(26.5, 24.4), (26.9, 24.8)],
                             copy='ab' * 32)
    code, out, err = reproduce(capsys, 'one-cifar100', '--show', '--results', results)
    assert code == 0, err
    assert ('**reproduced** | every number within 1.0 point of the published, on an unofficial '
            'copy of the data (sha256 abababababab...') in out


def test_a_row_without_a_published_baseline_is_not_judged(tmp_path, capsys):
    results = results_folder(tmp_path, [7.0, 7.2], [(6.0, 5.5), (6.2, 5.7)], dataset='cifar10')
    code, out, err = reproduce(capsys, 'one-cifar10', '--show', '--results', results)
    assert code == 0, err
    assert ('| resnet-32 | ResNet-32 | **not judged** | methods/published.py has no baseline '
            'number for this row |') in out
    assert '| ONE | 2 | 6.10 ± 0.14 | 5.80 [' in out          # PCL's restatement, still shown


# ----------------------------------------------------------------------------- the rest

def test_the_listing_names_every_table_and_its_published_numbers(capsys):
    code, out, err = reproduce(capsys, '--list')
    assert code == 0, err
    for table in cli.TABLES:
        assert f'\n{table}: ' in '\n' + out
    assert 'published top-1 error %: baseline 31.18 [1], ONE 26.61 [1], ONE-E 24.63 [1]' in out
    assert 'cifar_dml.py 200' in out and 'OKDDip (aggregate=logits) 25.65 ± 0.15' in out


@pytest.mark.parametrize('argv, says', [
    (['nowhere'], "unknown table 'nowhere'"),
    ([], 'name a table'),
    (['one-cifar100', '--rows', 'resnet-33'], '--rows resnet-33: one-cifar100 has rows'),
    (['one-cifar100', '--show', '--results', '{tmp}'], 'no results of one-cifar100'),
    (['one-cifar100', '--root', 'x'], "reproduce.py sets the sweeps' --root"),
    (['one-cifar100', '--show', '--', '--fast'], '--show and --collect train nothing'),
    (['one-cifar100', '--seeds', '1', '1'], '--seeds names a seed twice'),
])
def test_mistakes_are_one_line(argv, says, tmp_path, capsys):
    code, out, err = reproduce(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and err.count('\n') == 1 and says in err, err
    assert err.startswith('reproduce.py: error: ')


def test_a_bad_sweep_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(['one-cifar100', '--executor', 'nowhere'])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count('\n') == 1 and err.startswith('reproduce.py: ')


def test_collecting_never_replaces_another_run(tmp_path):
    source, target = tmp_path / 'source', tmp_path / 'target'
    write_run(source, 'baseline', 0, {'1': 31.0}, epochs=2)
    write_run(target, 'baseline', 1, {'1': 30.0}, epochs=2)
    for name in ('log.txt', 'checkpoint.pth.tar'):
        (source / name).write_text('x')
    with pytest.raises(UserError, match='holds another run'):
        copy_run(str(source), str(target))
    assert json.loads((target / 'args.json').read_text())['manualSeed'] == 1


def test_a_run_is_collected_all_or_none(tmp_path, monkeypatch):
    """A run collected, trained further, then collected onto a full disk: nothing of the new
    copy is kept, so the next collection copies it whole (a summary.csv updated without its
    provenance.json kept the earlier checkpoint's digest ever after)."""
    source, target = tmp_path / 'source', tmp_path / 'target'
    write_run(source, 'baseline', 0, {'1': 31.0}, epochs=2)
    (source / 'log.txt').write_text('x')
    (source / 'checkpoint.pth.tar').write_bytes(b'epoch 2')
    copy_run(str(source), str(target))
    kept = {p.name: p.read_bytes() for p in target.iterdir()}
    with open(source / 'summary.csv', 'a') as f:
        f.write('3,69.0\n')
    (source / 'checkpoint.pth.tar').write_bytes(b'epoch 3')

    def full_disk(path, *args, **kwargs):
        if os.path.basename(path).startswith('provenance.json.'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open(path, *args, **kwargs)
    monkeypatch.setattr(atomic, 'open', full_disk, raising=False)
    with pytest.raises(UserError, match='No space left on device'):
        copy_run(str(source), str(target))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == kept
    monkeypatch.undo()
    copy_run(str(source), str(target))
    assert (target / 'summary.csv').read_bytes() == (source / 'summary.csv').read_bytes()
    assert json.loads((target / 'provenance.json').read_text())['checkpoint_sha256'] == \
        hashlib.sha256(b'epoch 3').hexdigest()


def test_a_script_names_its_method():
    assert method_of(os.path.join(ROOT, 'cifar_okddip.py')).name == 'okddip'


def test_a_script_s_flags_are_read_as_sweep_py_reads_its_help(monkeypatch):
    """reproduce.py plans a part's runs from each script's parser (script_flags), sweep.py
    expands them from the script's --help: the same flags, each naming the same option, so
    the runs planned are the runs launched."""
    monkeypatch.setenv('COLUMNS', '100')   # both help texts wrapped at one width
    in_process = script_flags.__wrapped__(os.path.join(ROOT, 'cifar_one.py'))   # not cached
    assert dict(in_process) == help_flags('cifar_one.py', ROOT)

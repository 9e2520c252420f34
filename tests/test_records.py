"""No run's record can be overwritten, rewritten or misreported: each run has an id and a folder
continues only its own run; a resume changes no flag that defines the run and never shortens
it; report.py reads damaged or unusual run folders without a traceback or a NaN; start-up and
shut-down signals, a bad export flag and an early divergence each give one line."""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

import cifar_baseline
import cifar_kd
import cifar_one
import export_branch
import report
from conftest import ROOT, load, tiny

SMALL = ['--epochs', 2, '--train-subset', 128]   # two epochs of two batches of 64
RECORDS = ('checkpoint.pth.tar', 'model_best.pth.tar', 'args.json', 'status.json')


def digests(folder):
    """sha256 of every file directly in FOLDER (the run lock's files aside)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith('.lock')}


def one_line(capsys, stream='err'):
    lines = getattr(capsys.readouterr(), stream).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def run_ids(run):
    """The run id in each record of RUN."""
    ids = {name: load(run / name)['run_id'] for name in RECORDS[:2] if (run / name).exists()}
    for name in RECORDS[2:]:
        ids[name] = json.loads((run / name).read_text())['run_id']
    return ids


@pytest.fixture(scope='module')
def runs(fashion_root, tmp_path_factory):
    """Finished two-epoch runs as the engine writes them: baseline seeds 7 (tiny's) and 8, a
    ONE run, and a KD run distilling the baseline of seed 8."""
    root = tmp_path_factory.mktemp('runs')
    for seed in (7, 8):
        assert cifar_baseline.main(tiny(fashion_root, root / f'baseline-{seed}', *SMALL,
                                        '--manualSeed', seed)) == 0
    assert cifar_one.main(tiny(fashion_root, root / 'one', *SMALL)) == 0
    assert cifar_kd.main(tiny(fashion_root, root / 'kd', *SMALL, '--teacher',
                              root / 'baseline-8' / 'checkpoint.pth.tar')) == 0
    return root


@pytest.fixture
def copy_of(tmp_path):
    def copy(run, name=None):
        target = tmp_path / (name or run.name)
        shutil.copytree(run, target)
        return target
    return copy


def strip_ids(run):
    """Make RUN's records look as the code before run ids wrote them."""
    for name in RECORDS[:2]:
        state = load(run / name)
        del state['run_id'], state['args']['run_id']
        torch.save(state, run / name)
    for name in RECORDS[2:]:
        record = json.loads((run / name).read_text())
        del record['run_id']
        (run / name).write_text(json.dumps(record))


# ----------------------------------------------------------------------------- 1. identity

def test_every_record_of_a_run_carries_its_id_and_a_new_run_gets_a_new_one(fashion_root, runs,
                                                                           copy_of):
    ids = run_ids(runs / 'baseline-7')
    assert len(set(ids.values())) == 1
    assert re.fullmatch(r'\d{8}-\d{6}-[0-9a-f]{8}', ids['args.json'])
    assert ids['args.json'] != run_ids(runs / 'baseline-8')['args.json']
    run = copy_of(runs / 'baseline-7')
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--epochs', 3, '--resume',
                                    'auto')) == 0                        # continued: same id
    assert set(run_ids(run).values()) == {ids['args.json']}
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--epochs', 1, '--overwrite')) == 0
    new = set(run_ids(run).values())
    assert len(new) == 1 and ids['args.json'] not in new


@pytest.mark.parametrize('rewind', [[], ['--rewind']])
def test_another_runs_checkpoint_is_refused_and_points_to_init_from(fashion_root, runs, copy_of,
                                                                   rewind, capsys):
    """The issue's case: another seed's checkpoint copied into a finished run's folder."""
    run = copy_of(runs / 'baseline-7')
    shutil.copy(runs / 'baseline-8' / 'checkpoint.pth.tar', run / 'foreign.pth.tar')
    before = digests(run)
    argv = tiny(fashion_root, run, *SMALL, '--resume', run / 'foreign.pth.tar', *rewind)
    assert cifar_baseline.main(argv) == 2
    line = one_line(capsys)
    assert '(seed 8)' in line and '(seed 7)' in line and 'continues only its own run' in line
    assert f'--init-from {run / "foreign.pth.tar"}' in line
    assert digests(run) == before and not [p for p in run.iterdir() if p.is_dir()]


def test_another_runs_checkpoint_copied_over_the_folders_own_is_refused(fashion_root, runs,
                                                                       copy_of, capsys):
    run = copy_of(runs / 'baseline-7')
    shutil.copy(runs / 'baseline-8' / 'checkpoint.pth.tar', run / 'checkpoint.pth.tar')
    before = digests(run)
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--epochs', 3,
                                    '--resume', 'auto')) == 2
    assert 'model_best.pth.tar to run' in one_line(capsys)
    assert digests(run) == before


def test_checkpoints_from_before_run_ids_still_resume_and_get_an_id(fashion_root, runs, copy_of,
                                                                    capsys):
    """A run without ids continues (its records agree: seed, history) and takes a new id;
    another run's checkpoint without an id is still refused (its seed, or else its history,
    differs)."""
    run, other = copy_of(runs / 'baseline-7'), copy_of(runs / 'baseline-8')
    strip_ids(run)
    strip_ids(other)
    foreign = load(other / 'checkpoint.pth.tar')
    for seed in (8, 7):   # seed 7: the same seed as the run, another history
        torch.save({**foreign, 'seed': seed}, run / 'foreign.pth.tar')
        before = digests(run)
        argv = tiny(fashion_root, run, *SMALL, '--epochs', 3, '--manualSeed', seed,
                    '--resume', run / 'foreign.pth.tar')
        assert cifar_baseline.main(argv) == 2
        assert f'a run saved without an id (seed {seed}), but' in one_line(capsys)
        assert digests(run) == before
    (run / 'foreign.pth.tar').unlink()
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--epochs', 3,
                                    '--resume', 'auto')) == 0
    new_id = json.loads((run / 'args.json').read_text())['run_id']
    assert load(run / 'checkpoint.pth.tar')['run_id'] == new_id
    assert json.loads((run / 'status.json').read_text())['run_id'] == new_id
    assert len(load(run / 'checkpoint.pth.tar')['history']) == 3


# ----------------------------------------------------------------------------- 2. flags, epochs

@pytest.mark.parametrize('script, flags, says', [
    (cifar_baseline, ['--lr', 0.5], '--lr 0.1, not --lr 0.5'),
    (cifar_baseline, ['--schedule', 1], '--schedule 151 225, not --schedule 1'),
    (cifar_baseline, ['--train-batch', 32, '--wd', 5e-4],
     '--train-batch 64, --weight-decay 0.0001, not --train-batch 32, --weight-decay 0.0005'),
    (cifar_baseline, ['--nesterov'], '--nesterov off, not --nesterov on'),
    (cifar_baseline, ['--manualSeed', 5], '--manualSeed 7, not --manualSeed 5'),
    (cifar_one, ['--temperature', 2], '--temperature 3.0, not --temperature 2.0'),
])
def test_a_resume_cannot_change_what_the_run_trains(fashion_root, runs, copy_of, script, flags,
                                                    says, capsys):
    run = copy_of(runs / ('one' if script is cifar_one else 'baseline-7'))
    before = digests(run)
    assert script.main(tiny(fashion_root, run, *SMALL, '--epochs', 3, '--resume', 'auto')
                       + list(map(str, flags))) == 2
    line = one_line(capsys)
    assert f'continues a run trained with {says}' in line and '--init-from' in line
    assert digests(run) == before


def test_a_resume_never_shortens_a_run_and_a_done_run_is_left_alone(fashion_root, runs, copy_of,
                                                                    capsys):
    run = copy_of(runs / 'baseline-7')
    before = digests(run)
    argv = tiny(fashion_root, run, *SMALL, '--resume', 'auto')
    assert cifar_baseline.main(argv + ['--epochs', '1']) == 2
    line = one_line(capsys)
    assert 'has trained epoch 2, more than --epochs 1' in line and '--epochs 2 or more' in line
    assert cifar_baseline.main(argv) == 0                # as many epochs as done: nothing to do
    assert 'already trained its 2 epochs; nothing to do' in one_line(capsys, 'out')
    assert digests(run) == before


def test_a_run_stopped_after_its_last_save_is_finished_on_resume(fashion_root, runs, copy_of,
                                                                 capsys):
    """Killed between its last checkpoint and its logs: continuing it writes what is missing
    and marks it done, training nothing."""
    run = copy_of(runs / 'baseline-7')
    summary = (run / 'summary.csv').read_text()
    (run / 'summary.csv').unlink()
    status = json.loads((run / 'status.json').read_text())
    (run / 'status.json').write_text(json.dumps({**status, 'state': 'running'}))
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--resume', 'auto')) == 0
    assert (run / 'summary.csv').read_text() == summary
    assert json.loads((run / 'status.json').read_text())['state'] == 'done'


def test_start_epoch_outlives_the_first_command(fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--start-epoch', 1)) == 0
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--epochs', 3,
                                    '--resume', 'auto')) == 0
    assert json.loads((run / 'args.json').read_text())['start_epoch'] == 1
    assert [row['epoch'] for row in load(run / 'checkpoint.pth.tar')['history']] == [2, 3]


# ----------------------------------------------------------------------------- 5. smaller

def test_divergence_in_the_first_epoch_names_only_files_that_exist(fashion_root, tmp_path,
                                                                   capsys):
    run = tmp_path / 'r'
    assert cifar_baseline.main(tiny(fashion_root, run, *SMALL, '--lr', '1e38')) == 3
    line = one_line(capsys)
    assert 'NaN or Inf in epoch 1' in line and not (run / 'model_best.pth.tar').exists()
    assert f'the last good state is in {run / "checkpoint.pth.tar"}' in line
    assert 'model_best' not in line


def test_a_bad_export_flag_is_one_line(runs, capsys):
    with pytest.raises(SystemExit) as stop:
        export_branch.main([str(runs / 'one' / 'checkpoint.pth.tar'), '--branch', 'abc'])
    assert stop.value.code == 2
    assert "invalid int value: 'abc'" in one_line(capsys) and 'usage' not in capsys.readouterr().err


DRIVER = '''
import builtins, os, runpy, signal, sys, time
sys.path.insert(0, {root!r})
sys.argv = [{script!r}] + {flags!r}
if {during_imports!r}:
    real_import = builtins.__import__
    def importing(name, *args, **kwargs):
        if name == 'methods':   # the entry script's first heavy import
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
        return real_import(name, *args, **kwargs)
    builtins.__import__ = importing
try:
    runpy.run_path({script!r}, run_name='__main__')
except SystemExit as e:
    print('exit', e.code, flush=True)
os.kill(os.getpid(), signal.SIGTERM)   # after "Done.": the interpreter is about to shut down
time.sleep(60)
'''


@pytest.mark.parametrize('during_imports', [True, False])
def test_sigterm_while_starting_or_after_done_is_one_line(fashion_root, tmp_path,
                                                          during_imports):
    """SIGTERM's default action kills silently (-15): while the entry script imports, and
    once the run has ended, it gives one line and status 143 instead."""
    run = tmp_path / 'r'
    script = os.path.join(ROOT, 'cifar_baseline.py')
    code = DRIVER.format(root=ROOT, script=script, during_imports=during_imports,
                         flags=tiny(fashion_root, run, *map(str, SMALL), '--epochs', '1'))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        'cifar_baseline.py: stopped by SIGTERM outside training; files already saved are '
        'untouched']
    if during_imports:
        assert proc.stdout == '' and not run.exists()
    else:
        assert 'Done.' in proc.stdout and 'exit 0' in proc.stdout
        assert json.loads((run / 'status.json').read_text())['state'] == 'done'


# ----------------------------------------------------------------------------- 3, 4. report

def report_of(capsys, *argv):
    code = report.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_kd_runs_are_reported_with_their_teacher(runs, tmp_path, capsys):
    code, out, err = report_of(capsys, runs, '--out', tmp_path / 'out', '--no-plots')
    assert code == 0, err
    assert '| KD (teacher baseline ResNet-8 at epoch 2, batch=64) | 1 |' in out
    assert '| baseline (batch=64) | 2 |' in out and 'Skipped runs' not in out


def test_a_report_ignores_the_run_id(runs, copy_of, tmp_path, capsys):
    """Two seeds of one setup are one row although every run has its own id."""
    code, out, _ = report_of(capsys, runs / 'baseline-7', runs / 'baseline-8', '--out',
                             tmp_path / 'out', '--no-plots')
    assert code == 0 and '| 2 |' in out and 'run_id' not in out


def damage_json(rng, text):
    """args.json or status.json with one key dropped, retyped, duplicated or made NaN, or the
    text cut short."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError:   # damaged already (cut short): cut it again
        return text[:rng.randrange(len(text) + 1)]
    key = rng.choice(sorted(record))
    how = rng.choice(['drop', 'retype', 'duplicate', 'nan', 'truncate'])
    if how == 'truncate':
        return text[:rng.randrange(len(text))]
    if how == 'drop':
        del record[key]
    elif how == 'retype':
        record[key] = rng.choice([str(record[key]), None, [record[key]], {'v': record[key]},
                                  True, -1, 1e308, 2.5, '', 0])
    elif how == 'nan':
        record[key] = rng.choice([float('nan'), float('inf'), -float('inf')])
    text = json.dumps(record, indent=1)
    if how == 'duplicate':   # the same key twice: the later one wins in json.load
        text = text.replace('{', '{' + json.dumps(key) + ': ' + json.dumps(
            rng.choice(['x', None, 3, [1]])) + ',', 1)
    return text


def damage_csv(rng, text):
    """summary.csv with a row duplicated, dropped or cut, a field dropped or added, a value
    made NaN, Inf, empty or a word, or the text cut short."""
    lines = text.splitlines()
    i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
    how = rng.choice(['duplicate', 'drop', 'fewer', 'more', 'value', 'truncate', 'header'])
    if how == 'truncate':
        return text[:rng.randrange(len(text))]
    if how == 'duplicate':
        lines.insert(i, lines[i])
    elif how == 'drop':
        del lines[i]
    elif how == 'fewer':
        lines[i] = ','.join(lines[i].split(',')[:-1])
    elif how == 'more':
        lines[i] += ',' + rng.choice(['1', 'x', ''])
    elif how == 'value':
        fields = lines[i].split(',')
        fields[rng.randrange(len(fields))] = rng.choice(['nan', 'inf', '-inf', '', 'abc',
                                                         '1e999', '-5', '250', '2.5'])
        lines[i] = ','.join(fields)
    else:
        fields = lines[0].split(',')
        del fields[rng.randrange(len(fields))]
        lines[0] = ','.join(fields)
    return '\n'.join(lines) + '\n'


def test_report_survives_randomly_damaged_copies_of_real_runs(runs, tmp_path, capsys):
    """Seeded: 40 trees of real run folders, each with one to three damaged files. The report
    exits 0 with finite numbers in its table, or 2 with one line; never a traceback."""
    rng = random.Random(17)
    names = sorted(p.name for p in runs.iterdir())
    outcomes = {0: 0, 2: 0}
    for case in range(40):
        tree = tmp_path / f'case-{case}'
        for name in names:
            shutil.copytree(runs / name, tree / name)
        for _ in range(rng.randint(1, 3)):
            path = tree / rng.choice(names) / rng.choice(['args.json', 'status.json',
                                                          'summary.csv'])
            damage = damage_csv if path.suffix == '.csv' else damage_json
            path.write_text(damage(rng, path.read_text()))
        flags = ['--no-plots'] if case % 10 else []
        flags += ['--best'] if rng.random() < 0.5 else []
        code, out, err = report_of(capsys, tree, '--out', tmp_path / f'out-{case}', *flags)
        assert code in (0, 2) and 'Traceback' not in err, (case, err)
        outcomes[code] += 1
        if code == 2:
            assert err.count('\n') == 1, err
            continue
        for row in (line for line in out.splitlines() if line.startswith('| fashionmnist')):
            cells = [cell.strip() for cell in row.split('|')[1:-1]]
            mean, std = float(cells[4]), cells[5]
            assert 0 <= mean <= 100 and (std == '-' or 0 <= float(std) < 100), row
    print(f'\ndamaged run folders: {outcomes[0]} reports, {outcomes[2]} refusals')
    assert outcomes[0] >= 10   # most damage leaves some run to report

"""status.json: how a run ended (done, preempted, diverged, failed) and the epochs it completed,
for sweep.py --status and report.py. Also the optional TensorBoard event files."""
import errno
import json
import os
import signal

import pytest

from conftest import tiny
import cifar_baseline
import cifar_one
from test_faults import digests
from utils import atomic, engine
from utils.stops import EXIT_DIVERGED
from utils.checkpoint import load_checkpoint


def status(run):
    return json.loads((run / 'status.json').read_text())


def test_a_finished_run_is_done(fashion_root, tmp_path):
    run = tmp_path / 'r'
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 2, '--train-subset', 128)) == 0
    s = status(run)
    assert (s['state'], s['epoch'], s['epochs'], s['message']) == ('done', 2, 2, '')
    assert s['pid'] == os.getpid() and s['host']


def test_a_diverged_run_says_so(fashion_root, tmp_path):
    run = tmp_path / 'r'
    argv = tiny(fashion_root, run, '--epochs', 2, '--train-subset', 128, '--lr', '1e12')
    assert cifar_one.main(argv) == EXIT_DIVERGED
    s = status(run)
    assert s['state'] == 'diverged' and 'NaN or Inf' in s['message'] and s['epoch'] < 2


def test_a_preempted_run_says_so_and_then_finishes(fashion_root, tmp_path, monkeypatch):
    run = tmp_path / 'r'
    check = engine.Trainer.check

    seen = {}

    def signal_at_epoch2_batch1(self, meters, stop):
        if (self.epoch, self.step) == (1, 1):
            seen['during epoch 2'] = status(run)
            os.kill(os.getpid(), signal.SIGTERM)
        return check(self, meters, stop)

    monkeypatch.setattr(engine.Trainer, 'check', signal_at_epoch2_batch1)
    flags = ['--epochs', 2, '--train-subset', 256]
    assert cifar_baseline.main(tiny(fashion_root, run, *flags)) == 128 + signal.SIGTERM
    # rewritten once epoch 1 was done, not only at the start (sweep.py --status reads it)
    assert (seen['during epoch 2']['state'], seen['during epoch 2']['epoch']) == ('running', 1)
    s = status(run)
    assert (s['state'], s['epoch']) == ('preempted', 1) and '--resume' in s['message']
    monkeypatch.undo()
    assert cifar_baseline.main(tiny(fashion_root, run, *flags, '--resume', 'auto')) == 0
    assert (status(run)['state'], status(run)['epoch']) == ('done', 2)


def test_a_failure_during_training_is_recorded(fashion_root, tmp_path, monkeypatch):
    run = tmp_path / 'r'

    def broken(self, stop):
        raise RuntimeError('simulated failure')

    monkeypatch.setattr(engine.Trainer, 'run_epoch', broken)
    with pytest.raises(RuntimeError):
        cifar_baseline.main(tiny(fashion_root, run, '--epochs', 1, '--train-subset', 128))
    s = status(run)
    assert s['state'] == 'failed' and s['message'] == 'RuntimeError: simulated failure'


def full_disk_for(name):
    """utils.atomic's open, failing as a full disk does for the temporary files of NAME."""
    def opener(path, *args, **kwargs):
        if os.path.basename(path).startswith(name + '.'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open(path, *args, **kwargs)
    return opener


def saved_epochs(run):
    """The epochs checkpoint.pth.tar, summary.csv and log.txt hold."""
    rows = {name: len((run / name).read_text().splitlines()) - 1 if (run / name).exists()
            else 0 for name in ('summary.csv', 'log.txt')}
    return {'checkpoint.pth.tar': len(load_checkpoint(str(run / 'checkpoint.pth.tar'))['history']),
            **rows}


def results(files):
    return {name: digest for name, digest in files.items() if name not in ('status.json',
                                                                           'args.json')}


def test_status_never_claims_an_epoch_whose_files_could_not_be_written(fashion_root, tmp_path,
                                                                     monkeypatch, capsys):
    """A full disk at each file an epoch writes, in a run's first epoch and in a later one:
    one line, and status.json, checkpoint.pth.tar, summary.csv and log.txt all hold the
    epochs done before it (an epoch's files are written all or none); the run then goes on."""
    run, flags = tmp_path / 'r', ['--train-subset', 64]   # one batch an epoch
    run_epochs = engine.Trainer.run_epochs
    failing = {}

    def with_a_full_disk(self):  # after the run's first files: it fails at an epoch's end
        if failing:
            monkeypatch.setattr(atomic, 'open', full_disk_for(failing['name']), raising=False)
        try:
            return run_epochs(self)
        finally:
            monkeypatch.setattr(atomic, 'open', open, raising=False)

    monkeypatch.setattr(engine.Trainer, 'run_epochs', with_a_full_disk)
    for epochs, names in ((1, ('model_best.pth.tar', 'checkpoint.pth.tar', 'log.txt',
                               'summary.csv', 'curves.png')),
                          (2, ('checkpoint.pth.tar', 'summary.csv'))):
        for name in names:
            failing['name'] = name
            before = digests(run) if run.exists() else {}
            assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', epochs, *flags,
                                            '--resume', 'auto')) == 2, name
            line, = capsys.readouterr().err.strip().splitlines()
            assert f'could not write {run / name}: No space left on device' in line
            assert status(run)['state'] == 'failed' and status(run)['epoch'] == epochs - 1
            assert set(saved_epochs(run).values()) == {epochs - 1}, (name, saved_epochs(run))
            if before:  # the results saved are untouched (a new run's first files are new)
                assert results(digests(run)) == results(before), name
        failing.clear()
        assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', epochs, *flags,
                                        '--resume', 'auto')) == 0
        assert (status(run)['state'], status(run)['epoch']) == ('done', epochs)
        assert set(saved_epochs(run).values()) == {epochs}


def test_tensorboard_flag_writes_the_run_history(fashion_root, tmp_path):
    from test_report import read_events
    run, plain = tmp_path / 'r', tmp_path / 'plain'
    flags = ['--epochs', 2, '--train-subset', 128]
    assert cifar_one.main(tiny(fashion_root, run, *flags, '--tensorboard')) == 0
    assert cifar_one.main(tiny(fashion_root, plain, *flags)) == 0
    assert not (plain / 'tensorboard').exists()
    events = read_events(run / 'tensorboard')
    accs = [e.value for e in events.Scalars('test/acc_ens')]
    history = load_checkpoint(str(run / 'checkpoint.pth.tar'))['history']
    assert [e.step for e in events.Scalars('test/acc_ens')] == [1, 2]
    assert accs == pytest.approx([row['test_acc_ens'] for row in history], abs=1e-4)


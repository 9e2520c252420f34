"""End-to-end runs of the entry scripts on a small generated Fashion-MNIST, on the CPU."""
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

import cifar_baseline
import cifar_one
import demo_fashion_mnist
import export_branch
from conftest import ROOT, assert_same_run, load, run_script, tiny
from utils import engine

def test_two_epochs_through_the_cli_write_every_run_file(fashion_root, tmp_path):
    """The run's files as the engine writes them for any method (one process, as a user runs
    it); every method's columns and identity: tests/test_methods_cli.py."""
    script, arch = 'cifar_one.py', 'one_resnet'
    columns = ['TAcc_1', 'VAcc_1', 'TAcc_2', 'VAcc_2', 'TAcc_3', 'VAcc_3', 'TAcc_e', 'VAcc_e']
    run = tmp_path / 'run'
    proc = run_script(script, *tiny(fashion_root, run, '--epochs', 2))
    epoch_lines = [l for l in proc.stdout.splitlines() if l.startswith('Epoch ')]
    assert len(epoch_lines) == 2 and 'lr 0.1 ' in epoch_lines[0] and 'w ' in epoch_lines[0]
    assert 'Traceback' not in proc.stderr

    log = (run / 'log.txt').read_text().splitlines()
    assert log[0].split('\t') == columns and len(log) == 3
    with open(run / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['epoch']) for r in rows] == [1, 2]
    assert float(rows[0]['rampup']) == pytest.approx(0.0067379, abs=1e-6)
    assert float(log[2].split('\t')[1]) == pytest.approx(float(rows[1]['test_acc_1']), abs=1e-6)
    args = json.loads((run / 'args.json').read_text())
    assert args['arch'] == arch and args['manualSeed'] == 7 and args['epochs'] == 2
    assert (run / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    state = load(run / 'checkpoint.pth.tar')
    assert (state['arch'], state['epoch'], state['step']) == (arch, 2, 0)
    best = max(rows, key=lambda r: float(r['test_acc_1']))
    assert load(run / 'model_best.pth.tar')['epoch'] == int(best['epoch'])
    assert state['best_acc'] == pytest.approx(float(best['test_acc_1']))


def test_learning_on_separable_data(fashion_root, tmp_path):
    """The generated classes are trivially separable: ONE must learn them in a few epochs."""
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'r', '--epochs', 6, '--lr', 0.05)) == 0
    history = load(tmp_path / 'r' / 'checkpoint.pth.tar')['history']
    assert history[-1]['train_loss'] < 0.8 * history[0]['train_loss']
    assert history[-1]['test_acc_ens'] > 35  # chance is 10%


def test_lr_and_rampup_follow_the_epoch_after_resume(fashion_root, tmp_path):
    run = tmp_path / 'r'
    flags = ['--schedule', 1, 2, '--gamma', 0.5, '--consistency_rampup', 2]
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 2, *flags)) == 0
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 3, '--resume', 'auto', *flags)) == 0
    history = load(run / 'checkpoint.pth.tar')['history']
    assert [r['lr'] for r in history] == pytest.approx([0.1, 0.05, 0.025])
    assert [r['rampup'] for r in history] == pytest.approx([0.0067379, 0.2865048, 1.0], abs=1e-6)


def test_sigterm_mid_epoch_saves_that_step_and_resumes_identically(fashion_root, tmp_path,
                                                                     monkeypatch):
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    assert cifar_one.main(tiny(fashion_root, straight, '--epochs', 2)) == 0

    check = engine.Trainer.check

    def signal_at_epoch2_batch3(self, meters, stop):
        if (self.epoch, self.step) == (1, 3):
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal through the real handler
        return check(self, meters, stop)

    monkeypatch.setattr(engine.Trainer, 'check', signal_at_epoch2_batch3)
    assert cifar_one.main(tiny(fashion_root, stopped, '--epochs', 2)) == 128 + signal.SIGTERM
    state = load(stopped / 'checkpoint.pth.tar')
    assert (state['epoch'], state['step']) == (1, 3)
    monkeypatch.undo()
    assert cifar_one.main(tiny(fashion_root, stopped, '--epochs', 2, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', stopped / 'checkpoint.pth.tar')


def test_sigterm_to_a_real_process(fashion_root, tmp_path):
    """SIGTERM at an arbitrary moment of a real run: one line, non-zero exit, exact resume."""
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    flags = ['--epochs', 3, '--train-subset', 256]
    assert cifar_one.main(tiny(fashion_root, straight, *flags)) == 0
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, 'cifar_one.py'),
                             *tiny(fashion_root, stopped, *flags)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (stopped / 'log.txt').exists():
        time.sleep(0.005)  # stop it once epoch 1 is logged: in epoch 2's training or evaluation
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert len(err.strip().splitlines()) == 1 and 'resume with --resume' in err
    assert cifar_one.main(tiny(fashion_root, stopped, *flags, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', stopped / 'checkpoint.pth.tar')


def test_exported_branch_evaluates_like_the_branch(fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    assert cifar_one.main(tiny(fashion_root, run, '--epochs', 1)) == 0
    out = tmp_path / 'branch2.pth.tar'
    assert export_branch.main([str(run / 'checkpoint.pth.tar'), '--branch', '2', '-o', str(out)]) == 0
    exported = load(out)
    assert exported['arch'] == 'resnet' and 'optimizer' not in exported
    assert sum(v.numel() for k, v in exported['state_dict'].items()
               if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))) == 78042
    capsys.readouterr()
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume', out)) == 0
    accuracy = float(capsys.readouterr().out.splitlines()[1].split()[-1])
    assert accuracy == pytest.approx(load(run / 'checkpoint.pth.tar')['history'][-1]['test_acc_2'],
                                     abs=0.005)
    # an export is for evaluation: training from it is refused, and the export is not overwritten
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '--resume', out)) == 2
    assert export_branch.main([str(run / 'checkpoint.pth.tar'), '--branch', '4', '-o',
                               str(tmp_path / 'b4')]) == 2
    assert export_branch.main([str(run / 'checkpoint.pth.tar'), '-o', str(out)]) == 2


def test_shell_script_passes_extra_arguments_through(fashion_root, tmp_path):
    proc = subprocess.run(['bash', os.path.join(ROOT, 'ONE_ResNet32.sh'), *tiny(fashion_root,
                           tmp_path / 'r', '--epochs', 1, '--train-subset', 128)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, 'PYTHON': sys.executable})
    assert proc.returncode == 0, proc.stderr
    args = json.loads((tmp_path / 'r' / 'args.json').read_text())
    assert (args['depth'], args['epochs'], args['dataset']) == (8, 1, 'fashionmnist')
    assert (args['schedule'], args['weight_decay'], args['consistency_rampup']) == ([151, 225], 1e-4, 80)


@pytest.mark.parametrize('script, network, folder', [
    ('ONE_ResNet32.sh', '-a one_resnet --dataset cifar100 --depth 32', 'ONE-32'),
    ('ONE_ResNet110.sh', '-a one_resnet --dataset cifar100 --depth 110', 'ONE-110'),
    ('Baseline_ResNet32.sh', '-a resnet --dataset cifar100 --depth 32', 'baseline-32'),
    ('Baseline_ResNet110.sh', '-a resnet --dataset cifar100 --depth 110', 'baseline-110'),
    ('ONE_ResNeXt29.sh', '-a resnext --depth 29 --cardinality 8 --base-width 64', 'ONE-ResNeXt29'),
    ('Baseline_ResNeXt29.sh', '-a resnext --depth 29 --cardinality 8 --base-width 64',
     'baseline-ResNeXt29'),
    ('ONE_DenseNetBC190.sh', '-a densenet --depth 190 --growth-rate 40', 'ONE-DenseNetBC190'),
    ('Baseline_DenseNetBC190.sh', '-a densenet --depth 190 --growth-rate 40',
     'baseline-DenseNetBC190'),
])
def test_shell_scripts_hold_the_paper_settings(script, network, folder):
    text = open(os.path.join(ROOT, script)).read()
    command = ' '.join(text.split('exec', 1)[1].replace('\\\n', ' ').split())
    for setting in (network, '--dataset cifar100', '--epochs 300', '--schedule 151 225',
                    '--gamma 0.1', '--wd 1e-4', '--train-batch 128', '"$@"'):
        assert setting in command, setting
    assert ('--consistency_rampup 80' in command) == script.startswith('ONE')
    assert 'gpu' not in command.lower()
    assert f'checkpoints/cifar100/{folder} ' in command


def test_demo_prints_mean_and_std_over_seeds(fashion_root, tmp_path, capsys):
    argv = ['--data-dir', fashion_root, '--out', str(tmp_path), '--depth', '8', '--epochs', '2',
            '--train-subset', '256', '--rampup', '2', '--seeds', '3', '4', '--jobs', '2']
    assert demo_fashion_mnist.main(argv) == 0
    out = capsys.readouterr().out
    assert 'mean ± sample std over n = 2 seeds (3 4)' in out
    assert '(200 images)' in out  # the generated test split's size, not a fixed 10,000
    table = {line[2:20].strip(): line[20:].split()
             for line in out[out.index('mean ± std   per seed'):].splitlines()[1:6]}
    last = {}
    for name, run, column in (('baseline', 'baseline', '1'), ('ONE (branch 1)', 'one', '1'),
                              ('ONE-E (ensemble)', 'one', 'ens')):
        checkpoints = [load(tmp_path / f'{run}-8-seed{seed}' / 'checkpoint.pth.tar')
                       for seed in (3, 4)]
        assert [c['args']['manualSeed'] for c in checkpoints] == [3, 4]
        assert all(c['args']['epochs'] == 2 and c['args']['schedule'] == [1, 1]
                   for c in checkpoints)
        last[name] = [c['history'][-1][f'test_acc_{column}'] for c in checkpoints]
        mean, _, std, *per_seed = table[name]
        assert float(mean) == pytest.approx(statistics.mean(last[name]), abs=0.005)
        assert float(std) == pytest.approx(statistics.stdev(last[name]), abs=0.005)
        assert [float(a) for a in per_seed] == pytest.approx(last[name], abs=0.005)
    assert checkpoints[0]['args']['consistency_rampup'] == 2
    gains = [a - b for a, b in zip(last['ONE-E (ensemble)'], last['baseline'])]
    assert float(table['ONE-E - baseline'][0]) == pytest.approx(statistics.mean(gains), abs=0.005)
    assert float(table['ONE-E - baseline'][2]) == pytest.approx(statistics.stdev(gains), abs=0.005)
    assert (tmp_path / 'comparison.png').stat().st_size > 1000
    assert demo_fashion_mnist.main(argv) == 0  # a second run reuses the finished runs
    again = capsys.readouterr().out
    assert again[again.index('mean ± std'):] == out[out.index('mean ± std'):]
    assert load(tmp_path / 'one-8-seed4' / 'checkpoint.pth.tar')['history'] == \
        checkpoints[1]['history']


def test_demo_refuses_one_seed_and_reports_a_failed_run(fashion_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        demo_fashion_mnist.main(['--data-dir', fashion_root, '--seeds', '1', '1'])
    assert exit_.value.code == 2
    assert '--seeds needs at least two different seeds' in capsys.readouterr().err
    argv = ['--data-dir', fashion_root, '--out', str(tmp_path), '--depth', '9', '--seeds', '0', '1']
    assert demo_fashion_mnist.main(argv) == 2  # the entry scripts' status for a bad flag
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '4 run(s) failed' in err and '6n+2' in err

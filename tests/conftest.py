import os
import subprocess
import sys

import pytest
import torch

from fakedata import write_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


# The tiny runs most tests train: a depth-8 network on the generated Fashion-MNIST below.
TINY = ['-d', 'fashionmnist', '--depth', '8', '--train-batch', '64', '--test-batch', '100',
        '--manualSeed', '7']


def flags_of(keywords):
    """A network's constructor keywords as its command-line flags: {'growth_rate': 4,
    'final_norm': False} -> ['--growth-rate', '4', '--no-final-norm']."""
    flags = []
    for key, value in keywords.items():
        flag = '--' + key.replace('_', '-')
        if value is None:     # the constructor's own default
            continue
        if isinstance(value, bool):
            flags.append(flag if value else '--no-' + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def tiny(data_root, folder, *extra):
    return TINY + ['--data-dir', data_root, '-c', str(folder), *map(str, extra)]


def without_seed(argv):
    """A tiny run's flags without its --manualSeed (for --seeds, which sets each run's)."""
    i = argv.index('--manualSeed')
    return argv[:i] + argv[i + 2:]


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def without_time(history):
    return [{k: v for k, v in row.items() if k != 'seconds'} for row in history]


def assert_same_run(a, b):
    """Bitwise-equal weights, optimizer state and logged metrics of two checkpoints."""
    a, b = load(a), load(b)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key in a['state_dict']:
        assert torch.equal(a['state_dict'][key], b['state_dict'][key]), key
    for key, state in a['optimizer']['state'].items():
        assert torch.equal(state['momentum_buffer'], b['optimizer']['state'][key]['momentum_buffer'])
    assert without_time(a['history']) == without_time(b['history'])
    assert (a['epoch'], a['step'], a['best_acc']) == (b['epoch'], b['step'], b['best_acc'])


@pytest.fixture(scope='session')
def fashion_root(tmp_path_factory):
    """A data dir holding a small generated Fashion-MNIST (512 train, 200 test images)."""
    root = tmp_path_factory.mktemp('data')
    write_fashion_mnist(str(root), num_train=512, num_test=200)
    return str(root)


def run_script(script, *flags, cwd=None, check=True, env=None):
    """Run one of the entry scripts as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, flags)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f'{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}')
    return proc


@pytest.fixture(scope='module')
def one_thread():
    """For modules of tiny tensors: one thread is faster, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def objective(method, **flags):
    """A method's objective with its own defaults (methods/*.py), `flags` set on top."""
    from methods import METHODS
    return METHODS[method].objective(METHODS[method].defaults(**flags))


# ----------------------------------------------------------------------------- entry scripts

def entry(name):
    """A method's entry script, cifar_<name>.py, as a module."""
    import importlib
    return importlib.import_module(f'cifar_{name}')


def needs_teacher(name):
    from methods import METHODS
    return hasattr(METHODS[name].defaults(), 'teacher')


def run_flags(name, teacher, *extra):
    """Flags a method's tiny run needs: 4 batches an epoch, and --teacher where it has one."""
    return ['--train-subset', 256, *(['--teacher', teacher] if needs_teacher(name) else []),
            *extra]


@pytest.fixture(scope='session')
def teacher(fashion_root, tmp_path_factory):
    """A baseline checkpoint, for methods that distil from a trained network."""
    import cifar_baseline
    run = tmp_path_factory.mktemp('teacher') / 'baseline'
    assert cifar_baseline.main(tiny(fashion_root, run, '--epochs', 1, '--train-subset', 256)) == 0
    return str(run / 'checkpoint.pth.tar')


# ----------------------------------------------------------------------------- sweep.py

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sweep.main in this process on a FakeSlurm (tests/sweep_helpers.py), the scripts' flags
    given (no --help run) and every run passing its check."""
    from sweep_helpers import FLAGS, FakeSlurm
    from sweeps import cli, grid
    folder = tmp_path / 'bin'
    folder.mkdir()
    monkeypatch.setenv('PATH', f'{folder}{os.pathsep}{os.environ["PATH"]}')
    monkeypatch.setenv('PYTHONPATH', os.environ.get('PYTHONPATH', ''))   # restored after
    monkeypatch.setattr(grid, 'help_flags', lambda script, cwd: FLAGS[script])
    monkeypatch.setattr(cli, 'check_runs', lambda runs, cwd: [])
    monkeypatch.chdir(ROOT)
    return FakeSlurm(folder)

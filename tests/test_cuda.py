"""The CUDA path gives the CPU path's results. Skipped, with the reason shown (pytest -rs),
where there is no GPU; `make test` and `make gpu-check` run it where there is one.

The comparisons are device-agnostic helpers, parametrised over devices: 'cpu' always runs
(CPU against CPU, which must be bitwise equal: so the helpers and each test's logic run on
every machine), 'cuda' where a GPU is. The end-to-end runs through the command line are
parametrised over 'cuda' only, as their CPU versions are in test_training.py,
test_fast_paths.py and test_distributed.py; CUDA_TESTS_ON_CPU=1 adds 'cpu' to them too, to
check these tests' own logic on a machine without a GPU (a few minutes on 2 cores).

Tolerances, as relative L2 errors ||a - b|| / ||b||: over all tensors together (`all`), and
per tensor (`each`, with an absolute floor of atol sqrt(numel) for near-zero tensors). The
per-tensor bound is loose because BatchNorm's parameters get gradients with cancellation
(its backward subtracts means), whose rounding errors are large relative to their small
norms; it still catches a tensor that is wrong, which is off by O(1).
  - the same computation on the same device: bitwise.
  - other kernels in fp32 (CUDA against the CPU with TF32 off; channels_last against
    contiguous; compiled against eager): all 1e-2, each 0.1. Measured on the CPU: layouts,
    one step's gradients: all 6e-4, each up to 3.5e-3; compiled, the weights after two steps:
    all 1e-3, each up to 2.5e-2 (a BatchNorm bias, starting at 0).
  - CUDA with TF32 on (PyTorch's default for cuDNN convolutions, so the engine's default on
    Ampere and later): all 5e-2, each 0.3. TF32 rounds the convolutions' inputs to 10
    mantissa bits; bf16 autocast (7 bits) moves one step's gradients by 6% in all and up to
    30% for a BatchNorm parameter on the CPU.
  - bf16 / fp16 autocast against fp32: the loss within 2% / 1% (measured on the CPU: 0.015%
    / 0.0006%), all gradients together within 25% / 10% (measured: 6.2% / 2.0%).
"""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_same_run, load, objective, run_script, tiny, without_seed
from fakedata import random_images
from methods import METHODS
from utils.checkpoint import save_atomic
from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.setup import build_model
from utils.steps import train_step

CUDA = torch.cuda.is_available()
NO_GPU = 'no CUDA GPU on this machine'
requires_cuda = pytest.mark.skipif(not CUDA, reason=NO_GPU)
ON_CUDA = pytest.param('cuda', marks=requires_cuda, id='cuda')
DEVICES = ['cpu', ON_CUDA]  # cheap comparisons: always on the CPU too
RUN_DEVICES = [ON_CUDA] + (['cpu'] if os.environ.get('CUDA_TESTS_ON_CPU') else [])

EXACT = dict(all=0.0, each=0.0, atol=0.0)
FP32 = dict(all=1e-2, each=0.1, atol=1e-6)
TF32 = dict(all=5e-2, each=0.3, atol=1e-5)
AMP = {'bf16': dict(loss=2e-2, grads=0.25), 'fp16': dict(loss=1e-2, grads=0.1)}
SIGTERM_EXIT = 128 + signal.SIGTERM
MAX_SCALER_BACKOFFS = 30  # fp16: the GradScaler halves its scale after each overflowing step


# ----------------------------------------------------------------------------- helpers

def far_tensors(actual, expected, each, atol, **_):
    """Names of the tensors of two {name: tensor} dicts whose L2 distance exceeds
    each ||expected|| + atol sqrt(numel); with each = atol = 0, those not bitwise equal."""
    assert actual.keys() == expected.keys()
    far = []
    for name, b in expected.items():
        a = actual[name]
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if each == 0 and atol == 0:
            ok = torch.equal(a, b)
        else:
            a, b = a.double(), b.double()
            ok = bool(torch.isfinite(a).all()) and \
                (a - b).norm() <= each * b.norm() + atol * b.numel() ** 0.5
        if not ok:
            far.append(name)
    return far


def global_relative_error(actual, expected):
    """||a - b|| / ||b|| over the floating-point tensors of two dicts, taken together."""
    names = [n for n, t in expected.items() if t.is_floating_point()]
    a = torch.cat([actual[n].double().flatten() for n in names])
    b = torch.cat([expected[n].double().flatten() for n in names])
    return ((a - b).norm() / b.norm()).item()


def assert_close_tensors(actual, expected, tol, what):
    far = far_tensors(actual, expected, **tol)
    assert not far, f'{what}: {len(far)} tensor(s) beyond {tol}: {far[:5]}'
    if tol['all']:
        error = global_relative_error(actual, expected)
        assert error <= tol['all'], f'{what}: relative error {error:.3g} over all tensors, beyond {tol}'


@contextmanager
def tf32(allowed):
    """TF32 for cuDNN convolutions and cuBLAS matrix multiplies on or off (no effect on CPU)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def tolerance(device, tf32_allowed):
    if device == 'cpu':
        return EXACT
    return TF32 if tf32_allowed else FP32


@pytest.fixture(scope='module')
def batch():
    """32 augmented, normalised CIFAR-like images made on the CPU, and their labels."""
    torch.manual_seed(0)
    images = torch.from_numpy(random_images(np.random.default_rng(0), 64))
    labels = torch.randint(0, 10, (64,))
    loader = DeviceLoader(images, labels, CIFAR_MEAN, CIFAR_STD, 32, shuffle=True, augment=True,
                          seed=1, memory_format=torch.channels_last)
    return next(loader.batches(epoch=3))


def one_step(device, batch, amp='off', channels_last=True):
    """One train_step of a depth-8 ONE model from a fixed initialisation (made on the CPU, then
    moved) on a fixed batch (made on the CPU, then moved). Under fp16 the step is repeated on
    the same batch until the GradScaler's scale is low enough for finite gradients (a skipped
    step leaves the weights as they were). Returns the loss, gradients, parameters, their
    update and the buffers after the step, all on the CPU."""
    device = torch.device(device)
    torch.manual_seed(0)
    config = METHODS['one'].defaults(depth=8, channels_last=channels_last)
    model = build_model(config, METHODS['one'], 10, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == 'fp16')
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = batch[0].to(device).contiguous(memory_format=memory_format)
    y = batch[1].to(device)
    before = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    for _ in range(MAX_SCALER_BACKOFFS):
        _, loss_sum = train_step(model, objective('one'), optimizer, scaler, x, y, 10, len(y), amp)
        grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()}
        if all(torch.isfinite(g).all() for g in grads.values()):
            break
    return SimpleNamespace(
        loss=loss_sum.item() / len(y), grads=grads,
        params={n: p.detach().cpu() for n, p in model.named_parameters()},
        updates={n: p.detach().cpu() - before[n] for n, p in model.named_parameters()},
        buffers={n: b.cpu() for n, b in model.named_buffers()})


def cli(device, fashion_root, folder, *extra):
    return tiny(fashion_root, folder, '--device', device, *extra)


# The entry scripts with --deterministic: torch.use_deterministic_algorithms(True), no cuDNN
# autotuning (which may pick other kernels in another process) and CUBLAS_WORKSPACE_CONFIG set
# before cuBLAS starts. Without it, CUDA runs are repeatable only to the kernels' rounding
# (test_resume_without_deterministic_mode_is_close).
def deterministic_command(script, argv):
    return [sys.executable, os.path.join(ROOT, script), *map(str, argv), '--deterministic']


def run_deterministic(script, argv):
    proc = subprocess.run(deterministic_command(script, argv), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f'{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}'
    return proc


def test_the_comparison_helper_tells_equal_close_and_far_apart():
    a = {'w': torch.ones(100), 'b': torch.zeros(3)}
    assert far_tensors(a, {k: v.clone() for k, v in a.items()}, **EXACT) == []
    nudged = {'w': a['w'] * (1 + 1e-4), 'b': a['b'] + 1e-7}
    assert far_tensors(nudged, a, **EXACT) == ['w', 'b']
    assert far_tensors(nudged, a, **FP32) == []  # 'b' is near zero: the absolute floor
    assert far_tensors({'w': a['w'] * 1.2, 'b': a['b']}, a, **FP32) == ['w']
    assert far_tensors({'w': a['w'], 'b': torch.full((3,), float('nan'))}, a, **TF32) == ['b']
    assert global_relative_error({'w': a['w'] * 1.03, 'b': a['b']}, a) == pytest.approx(0.03)
    with pytest.raises(AssertionError, match='over all tensors'):
        assert_close_tensors({'w': a['w'] * 1.03, 'b': a['b']}, a, FP32, 'w')


# ----------------------------------------------------------------------------- one step

@pytest.mark.parametrize('tf32_allowed', [False, True], ids=['fp32', 'tf32'])
@pytest.mark.parametrize('device', DEVICES)
def test_a_training_step_equals_the_cpu_step(device, tf32_allowed, batch):
    expected = one_step('cpu', batch)
    with tf32(tf32_allowed):
        actual = one_step(device, batch)
    tol = tolerance(device, tf32_allowed)
    assert actual.loss == pytest.approx(expected.loss, rel=tol['all'], abs=0)
    assert_close_tensors(actual.grads, expected.grads, tol, what='gradients')
    assert_close_tensors(actual.params, expected.params, tol, what='weights after the step')
    assert_close_tensors(actual.buffers, expected.buffers, tol, what='BatchNorm statistics')


@pytest.mark.parametrize('device', DEVICES)
def test_channels_last_step_equals_the_contiguous_step(device, batch):
    with tf32(False):
        plain = one_step(device, batch, channels_last=False)
        fast = one_step(device, batch, channels_last=True)
    assert fast.loss == pytest.approx(plain.loss, rel=FP32['all'])
    assert_close_tensors(fast.grads, plain.grads, FP32, what='gradients')
    assert_close_tensors(fast.params, plain.params, FP32, what='weights after the step')


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
@pytest.mark.parametrize('device', DEVICES)
def test_mixed_precision_step_is_finite_and_close_to_fp32(device, amp, batch):
    reference = one_step(device, batch)
    mixed = one_step(device, batch, amp=amp)
    assert np.isfinite(mixed.loss)
    assert all(torch.isfinite(t).all() for t in [*mixed.grads.values(), *mixed.params.values()])
    assert mixed.loss == pytest.approx(reference.loss, rel=AMP[amp]['loss'])
    assert global_relative_error(mixed.grads, reference.grads) < AMP[amp]['grads']
    # the step was taken (under fp16, once the scaler had backed off), and only once
    assert global_relative_error(mixed.updates, reference.updates) < AMP[amp]['grads']


# ----------------------------------------------------------------------------- the data

@pytest.mark.parametrize('augment', [True, False])
@pytest.mark.parametrize('memory_format', [torch.channels_last, torch.contiguous_format],
                         ids=['channels_last', 'contiguous'])
@pytest.mark.parametrize('device', DEVICES)
def test_device_batches_equal_the_cpu_batches_bitwise(device, memory_format, augment):
    images = torch.from_numpy(random_images(np.random.default_rng(1), 70))
    labels = torch.randint(0, 10, (70,), generator=torch.Generator().manual_seed(1))

    def loader(d):
        return DeviceLoader(images.to(d), labels.to(d), CIFAR_MEAN, CIFAR_STD, 16, shuffle=True,
                            augment=augment, seed=5, memory_format=memory_format)

    for epoch, start in ((0, 0), (7, 2)):
        pairs = list(zip(loader('cpu').batches(epoch, start), loader(device).batches(epoch, start)))
        assert len(pairs) == 5 - start
        for (x, y), (dx, dy) in pairs:
            assert dx.device.type == device and dx.is_contiguous(memory_format=memory_format)
            assert torch.equal(dy.cpu(), y)
            ulps = (dx.cpu().view(torch.int32) - x.view(torch.int32)).abs().max().item()
            # CUDA divides by a Python number by multiplying by its reciprocal: x / 255 that
            # way is 1 ulp off for 126 of the 256 pixel values
            assert ulps == 0, (f'batches differ by up to {ulps} ulp; a division by a Python '
                               'scalar in DeviceLoader.normalize?')


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize('device', DEVICES)
def test_a_checkpoint_moves_to_the_cpu_and_back_unchanged(device, batch, tmp_path):
    """Weights and optimizer state saved on the device load on the CPU bitwise, train on there,
    and go back to the device bitwise."""
    torch.manual_seed(0)
    config = METHODS['one'].defaults(depth=8, channels_last=True)

    def model_and_optimizer(d):
        model = build_model(config, METHODS['one'], 10, torch.device(d))
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    model, optimizer = model_and_optimizer(device)
    scaler = torch.amp.GradScaler(device, enabled=False)
    train_step(model, objective('one'), optimizer, scaler, batch[0].to(device), batch[1].to(device),
               10, 32, 'off')
    save_atomic({'state_dict': model.state_dict(), 'optimizer': optimizer.state_dict()},
                str(tmp_path / 'a.pth.tar'))
    state = load(tmp_path / 'a.pth.tar')  # onto the CPU, as utils.checkpoint loads
    on_device = {k: v.cpu() for k, v in model.state_dict().items()}
    assert_close_tensors(state['state_dict'], on_device, EXACT, what='saved weights')

    cpu_model, cpu_optimizer = model_and_optimizer('cpu')
    cpu_model.load_state_dict(state['state_dict'])
    cpu_optimizer.load_state_dict(state['optimizer'])
    momentum = {i: s['momentum_buffer'] for i, s in cpu_optimizer.state_dict()['state'].items()}
    assert all(m.device.type == 'cpu' for m in momentum.values())
    train_step(cpu_model, objective('one'), cpu_optimizer, torch.amp.GradScaler('cpu', enabled=False),
               *batch, 10, 32, 'off')
    save_atomic({'state_dict': cpu_model.state_dict(), 'optimizer': cpu_optimizer.state_dict()},
                str(tmp_path / 'b.pth.tar'))

    back, back_optimizer = model_and_optimizer(device)
    state = load(tmp_path / 'b.pth.tar')
    back.load_state_dict(state['state_dict'])
    back_optimizer.load_state_dict(state['optimizer'])
    assert_close_tensors({k: v.cpu() for k, v in back.state_dict().items()},
                         cpu_model.state_dict(), EXACT, what='weights back on the device')
    for s in back_optimizer.state.values():
        assert s['momentum_buffer'].device.type == device
    train_step(back, objective('one'), back_optimizer, scaler, batch[0].to(device), batch[1].to(device),
               10, 32, 'off')
    assert all(torch.isfinite(p).all() for p in back.parameters())


# ----------------------------------------------------------------------------- the scripts

@pytest.mark.parametrize('script, arch', [('cifar_one.py', 'one_resnet'),
                                          ('cifar_baseline.py', 'resnet')])
@pytest.mark.parametrize('device', RUN_DEVICES)
def test_two_epochs_through_the_cli(device, script, arch, fashion_root, tmp_path):
    run = tmp_path / 'run'
    proc = run_script(script, *cli(device, fashion_root, run, '--epochs', 2))
    assert 'Traceback' not in proc.stderr
    assert [l.split()[1] for l in proc.stdout.splitlines() if l.startswith('Epoch ')] == ['1/2', '2/2']
    assert json.loads((run / 'args.json').read_text())['device'] == device
    assert json.loads((run / 'status.json').read_text())['state'] == 'done'
    state = load(run / 'checkpoint.pth.tar')
    assert (state['arch'], state['epoch'], state['step']) == (arch, 2, 0)
    assert all(np.isfinite(row['train_loss']) and np.isfinite(row['test_loss'])
               for row in state['history'])


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_resume_is_bitwise_identical_with_deterministic_kernels(device, fashion_root, tmp_path):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    run_deterministic('cifar_one.py', cli(device, fashion_root, straight, '--epochs', 3))
    run_deterministic('cifar_one.py', cli(device, fashion_root, split, '--epochs', 1))
    run_deterministic('cifar_one.py', cli(device, fashion_root, split, '--epochs', 3,
                                          '--resume', 'auto'))
    assert_same_run(straight / 'checkpoint.pth.tar', split / 'checkpoint.pth.tar')
    assert (straight / 'log.txt').read_text() == (split / 'log.txt').read_text()


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_resume_without_deterministic_mode_is_close(device, fashion_root, tmp_path):
    """With the engine's defaults (cuDNN autotuning, TF32, atomics in some kernels) a resumed
    run is exactly what an uninterrupted run is at the epoch level (epochs, LR, ramp-up; the
    batches, crops and flips are functions of (seed, epoch)), and its weights differ from it
    only by kernel rounding: the same as two uninterrupted runs differ."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    flags = ['--lr', 0.02]  # a small step keeps rounding differences from growing chaotically
    run_script('cifar_one.py', *cli(device, fashion_root, straight, '--epochs', 3, *flags))
    run_script('cifar_one.py', *cli(device, fashion_root, split, '--epochs', 1, *flags))
    run_script('cifar_one.py', *cli(device, fashion_root, split, '--epochs', 3, *flags,
                                    '--resume', 'auto'))
    a, b = load(straight / 'checkpoint.pth.tar'), load(split / 'checkpoint.pth.tar')
    assert (a['epoch'], a['step']) == (b['epoch'], b['step']) == (3, 0)
    keys = ('epoch', 'lr', 'rampup')
    assert [[r[k] for k in keys] for r in a['history']] == [[r[k] for k in keys] for r in b['history']]
    assert global_relative_error(b['state_dict'], a['state_dict']) <= TF32['all']
    assert b['history'][-1]['train_loss'] == pytest.approx(a['history'][-1]['train_loss'], rel=1e-2)


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_sigterm_saves_and_the_resumed_run_is_identical(device, fashion_root, tmp_path):
    """SIGTERM to a real process at an arbitrary moment after epoch 1: one line, exit 143,
    and resuming gives the uninterrupted run bitwise (deterministic kernels). 32 steps an
    epoch, so that the engine's every-25-steps check on CUDA falls inside the epoch."""
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    flags = ['--epochs', 4, '--train-batch', 16]
    run_deterministic('cifar_one.py', cli(device, fashion_root, straight, *flags))
    proc = subprocess.Popen(deterministic_command('cifar_one.py', cli(device, fashion_root, stopped, *flags)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (stopped / 'log.txt').exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == SIGTERM_EXIT, err
    assert len(err.strip().splitlines()) == 1 and 'resume with --resume' in err
    assert json.loads((stopped / 'status.json').read_text())['state'] == 'preempted'
    run_deterministic('cifar_one.py', cli(device, fashion_root, stopped, *flags, '--resume', 'auto'))
    assert_same_run(straight / 'checkpoint.pth.tar', stopped / 'checkpoint.pth.tar')


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_fp16_run_keeps_its_gradient_scaler_across_a_resume(device, fashion_root, tmp_path):
    run = tmp_path / 'r'
    run_script('cifar_one.py', *cli(device, fashion_root, run, '--epochs', 1, '--amp', 'fp16'))
    scaler = load(run / 'checkpoint.pth.tar')['scaler']
    assert scaler is not None and 0 < scaler['scale'] <= 2 ** 16
    run_script('cifar_one.py', *cli(device, fashion_root, run, '--epochs', 2, '--amp', 'fp16',
                                    '--resume', 'auto'))
    state = load(run / 'checkpoint.pth.tar')
    assert state['epoch'] == 2 and all(np.isfinite(r['train_loss']) for r in state['history'])


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_compiled_training_equals_eager_and_saves_plain_weights(device, fashion_root, tmp_path):
    flags = ['--epochs', 1, '--train-subset', 128]  # 2 steps
    run_script('cifar_one.py', *cli(device, fashion_root, tmp_path / 'eager', *flags))
    run_script('cifar_one.py', *cli(device, fashion_root, tmp_path / 'compiled', *flags, '--compile'))
    eager = load(tmp_path / 'eager' / 'checkpoint.pth.tar')['state_dict']
    compiled = load(tmp_path / 'compiled' / 'checkpoint.pth.tar')['state_dict']
    assert compiled.keys() == eager.keys()  # no _orig_mod. prefix
    tol = TF32 if device == 'cuda' else FP32
    assert_close_tensors(compiled, eager, tol, what='weights after 2 compiled steps')


# 7 full batches of 64 and one of 32: 3 eager warm-up steps, then a graph recorded and replayed
# 4 times; the short batch runs eagerly. Epoch 2 changes the LR (--schedule 1), so its 7 full
# batches replay a graph of their own (a new ramp-up weight alone would not need one).
GRAPH_RUN = ['--epochs', 2, '--train-subset', 7 * 64 + 32, '--schedule', 1]


@requires_cuda
@pytest.mark.parametrize('script', ['cifar_one.py', 'cifar_dml.py', 'cifar_okddip.py'])
def test_cuda_graphs_train_bitwise_as_the_eager_steps(script, fashion_root, tmp_path):
    """Replaying recorded steps is the eager run to the bit (deterministic kernels), for ONE,
    DML's alternating updates (several optimizer steps in one graph) and OKDDip."""
    eager, graphed = tmp_path / 'eager', tmp_path / 'graphed'
    run_deterministic(script, cli('cuda', fashion_root, eager, *GRAPH_RUN))
    proc = run_deterministic(script, cli('cuda', fashion_root, graphed, *GRAPH_RUN, '--cuda-graphs'))
    assert_same_run(eager / 'checkpoint.pth.tar', graphed / 'checkpoint.pth.tar')
    # epoch 1: 3 warm-up steps, 4 replayed; epoch 2: a new graph, 7 replayed
    assert 'CUDA graphs: 11 steps replayed from 2 recorded graph(s)' in proc.stdout, proc.stdout


@requires_cuda
def test_a_pack_on_cuda_graphs_its_steps_bitwise_and_stays_close_to_its_runs_alone(
        fashion_root, tmp_path):
    """--seeds 3 4 on a GPU (utils/pack.py): the graphed pack equals its eager steps to the bit
    (deterministic kernels), and each of its runs ends within the float32 (TF32) tolerance of
    its run trained alone on the GPU."""
    flags = ['--epochs', 1, '--train-subset', 5 * 64, '--seeds', 3, 4]
    eager, graphed = tmp_path / 'eager' / 'seed{seed}', tmp_path / 'graphed' / 'seed{seed}'
    run_deterministic('cifar_one.py', without_seed(cli('cuda', fashion_root, eager, *flags)))
    proc = run_deterministic('cifar_one.py', without_seed(
        cli('cuda', fashion_root, graphed, *flags, '--cuda-graphs')))
    assert 'CUDA graphs: 2 steps replayed from 1 recorded graph(s)' in proc.stdout, proc.stdout
    for seed in (3, 4):
        assert_same_run(tmp_path / 'eager' / f'seed{seed}' / 'checkpoint.pth.tar',
                        tmp_path / 'graphed' / f'seed{seed}' / 'checkpoint.pth.tar')
        alone = tmp_path / f'alone{seed}'
        run_deterministic('cifar_one.py', cli('cuda', fashion_root, alone, '--epochs', 1,
                                              '--train-subset', 5 * 64, '--manualSeed', seed))
        assert_close_tensors(load(tmp_path / 'eager' / f'seed{seed}' / 'checkpoint.pth.tar')[
            'state_dict'], load(alone / 'checkpoint.pth.tar')['state_dict'],
            tolerance('cuda', tf32_allowed=False), f'seed {seed}, packed against alone')


@requires_cuda
def test_one_graph_serves_every_ramp_up_weight_to_the_bit(fashion_root, tmp_path):
    """Two epochs at one learning rate but two ramp-up weights (ONE): one graph, which reads
    the weight from a tensor the engine sets each epoch, and the eager run's bits."""
    flags = ['--epochs', 2, '--train-subset', 7 * 64 + 32]
    eager, graphed = tmp_path / 'eager', tmp_path / 'graphed'
    run_deterministic('cifar_one.py', cli('cuda', fashion_root, eager, *flags))
    proc = run_deterministic('cifar_one.py', cli('cuda', fashion_root, graphed, *flags,
                                                 '--cuda-graphs'))
    assert_same_run(eager / 'checkpoint.pth.tar', graphed / 'checkpoint.pth.tar')
    assert 'CUDA graphs: 11 steps replayed from 1 recorded graph(s)' in proc.stdout, proc.stdout


@requires_cuda
def test_graphed_step_records_once_per_key_and_reads_new_inputs():
    from utils.graphs import GraphedStep
    weight = torch.ones(4, device='cuda')

    def step(x, y, scale):
        weight.add_(x.sum(0) * scale)
        return weight.sum().reshape(1), y * 2

    graphed = GraphedStep(step, warmup_steps=1)
    x, y = torch.ones(3, 4, device='cuda'), torch.arange(3, device='cuda')
    graphed(1, x, y, 1.0)                          # warm-up, eager: weight 1 + 3
    assert graphed(1, x, y, 1.0)[0].item() == 4 * 7    # recorded (not run), then replayed
    assert graphed(1, x * 2, y + 1, 1.0)[1].tolist() == [2, 4, 6]   # weight 13
    assert graphed(2, x, y, 0.5)[0].item() == 4 * 14.5  # a new key: recorded with 0.5
    assert (graphed.recorded, graphed.replayed) == (2, 3)
    assert weight.tolist() == [14.5] * 4


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_fast_preset_turns_on_what_it_says(device, fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    run_script('cifar_one.py', *cli(device, fashion_root, run, '--epochs', 1, '--train-subset', 128,
                                    '--fast'))
    args = json.loads((run / 'args.json').read_text())
    state = load(run / 'checkpoint.pth.tar')
    expected = (dict(amp='bf16', compile=False, cuda_graphs=True, channels_last=True)
                if device == 'cuda'
                else dict(amp='off', compile=False, cuda_graphs=False, channels_last=True))
    assert {k: args[k] for k in expected} == expected
    assert bool(state['optimizer']['param_groups'][0].get('fused')) == (device == 'cuda')
    assert all(np.isfinite(r['train_loss']) for r in state['history'])
    proc = run_script('cifar_one.py', *cli(device, fashion_root, tmp_path / 'unused', '-e',
                                           '--fast', '--resume', run / 'checkpoint.pth.tar'))
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith('branch 1'))
    assert float(line.split()[-1]) == pytest.approx(state['history'][-1]['test_acc_1'], abs=0.51)


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_a_device_checkpoint_evaluates_and_trains_on_the_cpu_and_back(device, fashion_root, tmp_path):
    run = tmp_path / 'r'
    run_script('cifar_one.py', *cli(device, fashion_root, run, '--epochs', 1))
    written = load(run / 'checkpoint.pth.tar')
    proc = run_script('cifar_one.py', *cli('cpu', fashion_root, tmp_path / 'unused', '-e',
                                           '--resume', run / 'checkpoint.pth.tar'))
    for name, key in (('branch 1', 'test_acc_1'), ('ensemble (ONE-E)', 'test_acc_ens')):
        line = next(l for l in proc.stdout.splitlines() if l.strip().startswith(name))
        # 200 test images: rounding in other kernels may flip a near-tie, one image is 0.5
        assert float(line.split()[-1]) == pytest.approx(written['history'][-1][key], abs=0.51)
    run_script('cifar_one.py', *cli('cpu', fashion_root, run, '--epochs', 2, '--resume', 'auto'))
    run_script('cifar_one.py', *cli(device, fashion_root, run, '--epochs', 3, '--resume', 'auto'))
    state = load(run / 'checkpoint.pth.tar')
    assert state['epoch'] == 3 and [r['epoch'] for r in state['history']] == [1, 2, 3]
    assert json.loads((run / 'args.json').read_text())['device'] == device


NCCL_CHECK = '''
import os, sys, torch, torch.distributed as dist
backend = sys.argv[1]
local = int(os.environ['LOCAL_RANK'])
device = torch.device('cuda', local) if backend == 'nccl' else torch.device('cpu')
if backend == 'nccl':
    torch.cuda.set_device(device)
dist.init_process_group(backend, device_id=device if backend == 'nccl' else None)
rank, size = dist.get_rank(), dist.get_world_size()
value = torch.tensor([rank + 1.0], device=device)
dist.all_reduce(value)
assert value.item() == size * (size + 1) / 2, value
print(f'rank {rank}/{size}: {backend} all_reduce on {device} ok', flush=True)
dist.destroy_process_group()
'''


@pytest.mark.parametrize('device', RUN_DEVICES)
def test_torchrun_on_the_gpus_present(device, fashion_root, tmp_path):
    """NCCL all-reduces over every GPU (up to 2; one rank on one GPU), and the training script
    runs under torchrun on them. With one GPU the engine runs as a single process (no process
    group), so its DDP path needs 2 GPUs: then its evaluation sharded over the ranks must
    also equal the single-process one."""
    ranks = min(2, torch.cuda.device_count()) if device == 'cuda' else 2
    torchrun = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
                str(ranks)]
    script = tmp_path / 'collective.py'
    script.write_text(NCCL_CHECK)
    proc = subprocess.run([*torchrun, str(script), 'nccl' if device == 'cuda' else 'gloo'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count('all_reduce on') == ranks

    run = tmp_path / 'r'
    argv = list(map(str, cli(device, fashion_root, run, '--epochs', 2)))
    proc = subprocess.run([*torchrun, os.path.join(ROOT, 'cifar_one.py'), *argv],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('Epoch 2/2') == 1
    state = load(run / 'checkpoint.pth.tar')
    assert state['epoch'] == 2 and not any(k.startswith(('module.', '_orig_mod.'))
                                           for k in state['state_dict'])
    if ranks > 1:
        argv = list(map(str, cli(device, fashion_root, tmp_path / 'x', '-e', '--resume',
                                 run / 'checkpoint.pth.tar')))
        single = run_script('cifar_one.py', *argv)
        sharded = subprocess.run([*torchrun, os.path.join(ROOT, 'cifar_one.py'), *argv],
                                 capture_output=True, text=True, timeout=300)
        assert sharded.returncode == 0, sharded.stderr
        # other batch compositions: on CUDA other kernels may flip a near-tie (0.5 an image)
        a, b = single.stdout.splitlines(), sharded.stdout.splitlines()
        assert len(a) == len(b) and a[0] == b[0]
        for x, y in zip(a[1:], b[1:]):
            assert x.rsplit(None, 1)[0] == y.rsplit(None, 1)[0]
            assert float(x.split()[-1]) == pytest.approx(float(y.split()[-1]),
                                                         abs=0.51 if device == 'cuda' else 0)

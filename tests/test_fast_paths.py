"""The speed options compute what the plain path computes (bitwise, or within a tolerance
where only the kernels' summation order differs)."""
import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cifar_one
from conftest import load, objective, tiny
from fakedata import random_images
from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.distributed import World
from methods import METHODS
from models.output import ModelOutput, column_hits
from utils.errors import UserError
from utils.setup import apply_fast_preset, build_model, check_cuda_graphs
from utils.steps import Meters, evaluate, scorer, train_step

CPU = torch.device('cpu')


def one_resnet8(channels_last, seed=0):
    torch.manual_seed(seed)
    config = METHODS['one'].defaults(depth=8, channels_last=channels_last)
    return build_model(config, METHODS['one'], 10, CPU)


def loader(images, labels, channels_last, batch=32):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return DeviceLoader(images, labels, CIFAR_MEAN, CIFAR_STD, batch, shuffle=True, augment=True,
                        seed=1, memory_format=fmt)


@pytest.fixture(scope='module')
def data():
    torch.manual_seed(0)
    return torch.from_numpy(random_images(np.random.default_rng(0), 64)), torch.randint(0, 10, (64,))


def test_channels_last_batches_hold_the_same_pixels(data):
    for (a, _), (b, _) in zip(loader(*data, False).batches(), loader(*data, True).batches()):
        assert torch.equal(a, b)
        assert b.is_contiguous(memory_format=torch.channels_last) and a.is_contiguous()


def test_channels_last_training_matches_contiguous_within_tolerance(data):
    """One SGD step from the same weights: each tensor's change differs between the layouts by
    summation order only: at most 2% of the change itself (0.6% measured on one thread; a wrong
    kernel would be ~100%), or 1e-6 where a tensor barely moves (the gate's pre-BatchNorm
    bias, whose gradient is rounding noise)."""
    start = {k: v.clone() for k, v in one_resnet8(False).state_dict().items()}
    models = []
    for channels_last in (False, True):
        model = one_resnet8(channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        x, y = next(loader(*data, channels_last).batches())  # one step: later ones amplify rounding
        train_step(model, objective('one'), optimizer, scaler, x, y, 10, len(y), 'off')
        models.append(model)
    plain, fast = (m.state_dict() for m in models)
    for key in plain:
        step = (plain[key] - start[key]).float()
        difference = (fast[key] - plain[key]).float()
        assert difference.norm() <= 2e-2 * step.norm() + 1e-6, key


def test_evaluation_changes_nothing_and_counts_like_a_direct_computation(data):
    model = one_resnet8(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = DeviceLoader(*data, CIFAR_MEAN, CIFAR_STD, 25, shuffle=False, augment=False,
                        memory_format=torch.channels_last)
    names = ['1', '2', '3', 'ens']
    score = scorer(METHODS['one'], objective('one'), 0, names)
    metrics = evaluate(model, test, score, names, World())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        hits = sum(column_hits(model(x), y, names) for x, y in test.batches())
    for i, name in enumerate(names):
        assert metrics[f'acc_{name}'] == pytest.approx(hits[0, i].item() * 100 / 64)
        assert metrics[f'acc5_{name}'] == pytest.approx(hits[1, i].item() * 100 / 64)


def test_meters_accumulate_on_the_device_like_python_sums():
    meters = Meters(2, CPU)
    total, hits, fives = 0.0, [0, 0], 0
    for _ in range(3):
        logits, ensemble = torch.randn(1, 8, 5), torch.randn(8, 5)
        y = torch.randint(0, 5, (8,))
        loss_sum = torch.rand(()) * 8
        meters.update(loss_sum, column_hits(ModelOutput(logits, ensemble), y, ['1', 'ens']),
                      len(y))
        total += loss_sum.item()
        hits[0] += (logits[0].argmax(1) == y).sum().item()
        hits[1] += (ensemble.argmax(1) == y).sum().item()
        fives += (ensemble.topk(5).indices == y[:, None]).any(1).sum().item()
    summary = meters.summary(['1', 'ens'])
    assert summary['acc5_ens'] == pytest.approx(fives * 100 / 24) == 100   # 5 classes
    assert summary['loss'] == pytest.approx(total / 24)
    assert (summary['acc_1'], summary['acc_ens']) == pytest.approx((hits[0] * 100 / 24, hits[1] * 100 / 24))


def test_bf16_autocast_step_stays_close_to_fp32(data):
    losses = []
    for amp in ('off', 'bf16'):
        model = one_resnet8(True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        x, y = next(loader(*data, True).batches())
        _, loss_sum = train_step(model, objective('one'), optimizer, scaler, x, y, 10, len(y), amp)
        losses.append(loss_sum.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_compiled_training_saves_plain_weights(fashion_root, tmp_path, monkeypatch):
    """--compile trains the same model (within tolerance) and its checkpoints carry no
    torch.compile wrapper: they load into a plain model. Compiled here by TorchDynamo with
    AOTAutograd's eager backend: the same graph capture and wrapper as inductor's, without
    the minutes inductor's C++ code generation takes on a CPU (tests/test_cuda.py compiles
    with inductor where a GPU is)."""
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='aot_eager'))
    flags = ['--epochs', 1, '--train-subset', 128]
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'plain', *flags)) == 0
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'compiled', *flags, '--compile')) == 0
    plain = load(tmp_path / 'plain' / 'checkpoint.pth.tar')['state_dict']
    compiled = load(tmp_path / 'compiled' / 'checkpoint.pth.tar')['state_dict']
    assert compiled.keys() == plain.keys()
    one_resnet8(False).load_state_dict(compiled)
    for key in plain:
        assert torch.allclose(plain[key].float(), compiled[key].float(), atol=2e-3), key  # 2 SGD steps of rounding


def preset_args(**flags):
    args = dict(fast=True, test_batch=None, channels_last=False, amp='off', compile=False,
                cuda_graphs=False)
    return SimpleNamespace(**{**args, **flags})


@pytest.mark.parametrize('flags, distributed, expected', [
    ({}, False, dict(amp='bf16', cuda_graphs=True, test_batch=1000, channels_last=True)),
    ({}, True, dict(amp='bf16', cuda_graphs=False, test_batch=1000)),     # not under torchrun
    ({'compile': True}, False, dict(cuda_graphs=False, compile=True)),
    ({'amp': 'fp16'}, False, dict(amp='fp16', cuda_graphs=False)),      # fp16's scaler syncs
    ({'test_batch': 50}, False, dict(test_batch=50, cuda_graphs=True)),  # an explicit batch stays
    ({'fast': False}, False, dict(amp='off', cuda_graphs=False, test_batch=100, channels_last=False)),
])
def test_fast_preset_on_cuda(flags, distributed, expected):
    """What --fast turns on for a CUDA device (the settings only: no GPU needed)."""
    args = preset_args(**flags)
    apply_fast_preset(args, torch.device('cuda'), distributed)
    assert {k: getattr(args, k) for k in expected} == expected


def test_fast_preset_on_the_cpu_is_channels_last_only():
    args = preset_args()
    apply_fast_preset(args, CPU)
    assert (args.channels_last, args.amp, args.cuda_graphs, args.test_batch) == (True, 'off', False, 100)


def test_cuda_graphs_are_refused_on_the_cpu_in_one_line(fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    assert cifar_one.main(tiny(fashion_root, run, '--device', 'cpu', '--cuda-graphs')) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert '--cuda-graphs needs a CUDA GPU (this run is on the CPU)' in err
    assert not run.exists()


@pytest.mark.parametrize('flags, world, message', [
    ({}, World(0, 2), 'one process only'),
    ({'compile': True}, World(), 'choose one'),
    ({'amp': 'fp16'}, World(), 'use --amp bf16'),
])
def test_cuda_graphs_are_refused_where_a_graph_cannot_hold_the_step(flags, world, message):
    args = preset_args(fast=False, cuda_graphs=True, **flags)
    with pytest.raises(UserError, match=message):
        check_cuda_graphs(args, torch.device('cuda'), world)

"""The speed options compute what the plain path computes (bitwise, or within a tolerance
where only the kernels' summation order differs)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import cifar_one
from fakedata import random_images
from test_training import load, tiny
from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.distributed import World
from methods import METHODS
from methods.one import ONELoss
from utils.losses import correct_counts
from utils.setup import build_model
from utils.steps import Meters, evaluate, train_step

CPU = torch.device('cpu')


def one_resnet8(channels_last, seed=0):
    torch.manual_seed(seed)
    config = SimpleNamespace(depth=8, num_branches=3, branch_point='stage3', gate='learned',
                             sync_bn=False, channels_last=channels_last)
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
    models = []
    for channels_last in (False, True):
        model = one_resnet8(channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        x, y = next(loader(*data, channels_last).batches())  # one step: later ones amplify rounding
        train_step(model, ONELoss(), optimizer, scaler, x, y, 10, len(y), 'off')
        models.append(model)
    plain, fast = (m.state_dict() for m in models)
    for key in plain:
        assert torch.allclose(plain[key].float(), fast[key].float(), rtol=1e-3, atol=1e-5), key


def test_evaluation_changes_nothing_and_counts_like_a_direct_computation(data):
    model = one_resnet8(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = DeviceLoader(*data, CIFAR_MEAN, CIFAR_STD, 25, shuffle=False, augment=False,
                        memory_format=torch.channels_last)
    names = ['1', '2', '3', 'ens']
    metrics = evaluate(model, test, METHODS['one'], ONELoss(), 0, names, World())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        hits = sum(correct_counts(model(x), y) for x, y in test.batches())
    for i, name in enumerate(names):
        assert metrics[f'acc_{name}'] == pytest.approx(hits[i].item() * 100 / 64)


def test_meters_accumulate_on_the_device_like_python_sums():
    meters = Meters(2, CPU)
    total, hits = 0.0, [0, 0]
    for _ in range(3):
        logits, ensemble = torch.randn(1, 8, 5), torch.randn(8, 5)
        y = torch.randint(0, 5, (8,))
        loss_sum = torch.rand(()) * 8
        meters.update(loss_sum, correct_counts((logits, ensemble), y), len(y))
        total += loss_sum.item()
        hits[0] += (logits[0].argmax(1) == y).sum().item()
        hits[1] += (ensemble.argmax(1) == y).sum().item()
    summary = meters.summary(['1', 'ens'])
    assert summary['loss'] == pytest.approx(total / 24)
    assert (summary['acc_1'], summary['acc_ens']) == pytest.approx((hits[0] * 100 / 24, hits[1] * 100 / 24))


def test_bf16_autocast_step_stays_close_to_fp32(data):
    losses = []
    for amp in ('off', 'bf16'):
        model = one_resnet8(True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler('cpu', enabled=False)
        x, y = next(loader(*data, True).batches())
        _, loss_sum = train_step(model, ONELoss(), optimizer, scaler, x, y, 10, len(y), amp)
        losses.append(loss_sum.item())
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_compiled_training_saves_plain_weights(fashion_root, tmp_path):
    """--compile trains the same model (within tolerance) and its checkpoints carry no
    torch.compile wrapper: they load into a plain model."""
    flags = ['--epochs', 1, '--train-subset', 128]
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'plain', *flags)) == 0
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'compiled', *flags, '--compile')) == 0
    plain = load(tmp_path / 'plain' / 'checkpoint.pth.tar')['state_dict']
    compiled = load(tmp_path / 'compiled' / 'checkpoint.pth.tar')['state_dict']
    assert compiled.keys() == plain.keys()
    one_resnet8(False).load_state_dict(compiled)
    for key in plain:
        assert torch.allclose(plain[key].float(), compiled[key].float(), atol=2e-3), key  # 2 SGD steps of rounding

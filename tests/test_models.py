"""Model tests: sizes, block types, shapes, the gate, init, export, backward (the facts and their
sources: docs/FIDELITY.md, Networks and Parameter counts)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import objective
from models import blocks_per_stage, branch_state_dict, one_resnet, resnet
from models.resnet import BasicBlock, Bottleneck


pytestmark = pytest.mark.usefixtures('one_thread')


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def trunk(model, x):
    """Stem + stages 1 and 2 of a ONE model (the shared part), computed by hand."""
    x = model.relu(model.bn1(model.conv1(x)))
    return model.layer2(model.layer1(x))


def perturb_batchnorm(model, generator):
    """Give every BN non-trivial affine parameters and running statistics, so that eval mode
    and state-dict export are tested with something other than the identity."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=generator)
            m.bias.data = 0.2 * torch.randn(c, generator=generator)
            m.running_mean = 0.1 * torch.randn(c, generator=generator)
            m.running_var = 0.5 + torch.rand(c, generator=generator)


# docs/FIDELITY.md, Parameter counts: (constructor, depth, num_classes, exact parameter count).
PARAM_COUNTS = [
    (resnet, 32, 100, 472_756), (resnet, 32, 10, 466_906),
    (one_resnet, 32, 100, 1_193_189), (one_resnet, 32, 10, 1_175_639),
    (resnet, 110, 100, 1_727_284), (resnet, 110, 10, 1_704_154),
    (one_resnet, 110, 100, 4_363_653), (one_resnet, 110, 10, 4_294_263),
]


@pytest.mark.parametrize('build,depth,num_classes,expected', PARAM_COUNTS,
                         ids=[f'{b.__name__}{d}-c{c}' for b, d, c, _ in PARAM_COUNTS])
def test_param_count(build, depth, num_classes, expected):
    assert num_params(build(depth, num_classes)) == expected


@pytest.mark.parametrize('depth,n,block', [(8, 1, BasicBlock), (20, 3, BasicBlock),
                                           (32, 5, BasicBlock), (44, 7, Bottleneck),
                                           (110, 18, Bottleneck)])
def test_block_type_and_count(depth, n, block):
    assert blocks_per_stage(depth) == (n, block)
    plain, one = resnet(depth), one_resnet(depth)
    stages = [plain.layer1, plain.layer2, plain.layer3, one.layer1, one.layer2]
    stages += [b.layer3 for b in one.branches]
    for stage in stages:
        assert len(stage) == n
        assert all(type(b) is block for b in stage)


@pytest.mark.parametrize('depth', [0, 2, 7, 10, 31, 33, 100, 111, 32.0, '32'])
@pytest.mark.parametrize('build', [resnet, one_resnet])
def test_bad_depth_raises(build, depth):
    with pytest.raises(ValueError, match=r'6n\+2'):
        build(depth)


def test_bad_num_branches_raises():
    with pytest.raises(ValueError, match='num_branches'):
        one_resnet(8, num_branches=0)


def test_one_trunk_plus_one_branch_is_a_resnet():
    """Shared part + branch 1 has exactly the parameters of a plain resnet of the same depth."""
    for depth in (8, 44):
        one = one_resnet(depth, 100, num_branches=3)
        part = num_params(one) - num_params(one.gate) - sum(num_params(b) for b in one.branches[1:])
        assert part == num_params(resnet(depth, 100))


@pytest.mark.parametrize('depth', [8, 44])
def test_resnet_forward_shape(depth):
    model = resnet(depth, num_classes=7)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize('num_branches', [1, 2, 3, 5])
def test_one_forward_shape(num_branches):
    model = one_resnet(8, num_classes=7, num_branches=num_branches)
    logits, ensemble, _ = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (num_branches, 4, 7)
    assert ensemble.shape == (4, 7)
    assert len(model.branches) == num_branches


@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
@pytest.mark.parametrize('num_branches', [1, 2, 3, 5])
def test_gate_and_ensemble_by_hand(num_branches, train):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = one_resnet(8, num_classes=6, num_branches=num_branches)
    perturb_batchnorm(model, g)
    model.train(train)
    x = torch.randn(5, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits, ensemble, _ = model(x)
        shared = trunk(model, x)
        assert shared.shape[-2:] == (16, 16)  # the gate reads stage 2's 16x16 map
        weights = model.gate(shared)
        # The gate as docs/FIDELITY.md (Networks) records it: global average pool ->
        # Linear(C2, m) with bias -> BatchNorm1d(m) -> ReLU -> softmax over the m entries.
        (linear,) = [m for m in model.gate.modules() if isinstance(m, nn.Linear)]
        (bn,) = [m for m in model.gate.modules() if isinstance(m, nn.BatchNorm1d)]
        assert (linear.in_features, linear.out_features) == (shared.shape[1], num_branches)
        assert linear.bias is not None and bn.num_features == num_branches
        by_hand = F.softmax(F.relu(bn(linear(shared.mean(dim=(2, 3))))), dim=1)
        branch_logits = torch.stack([b(shared) for b in model.branches])
    assert weights.shape == (5, num_branches)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(1), torch.ones(5))
    torch.testing.assert_close(weights, by_hand)
    torch.testing.assert_close(logits, branch_logits, rtol=0, atol=0)
    expected = sum(weights[:, i:i + 1] * branch_logits[i] for i in range(num_branches))
    torch.testing.assert_close(ensemble, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('build', [resnet, one_resnet])
def test_init(build):
    torch.manual_seed(0)
    model = build(32, 100)
    big = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 9000:
            k = m.kernel_size[0] * m.kernel_size[1]
            expected = math.sqrt(2.0 / (k * m.out_channels))
            w = m.weight.detach()
            assert abs(w.std().item() / expected - 1) < 0.05, name
            assert abs(w.mean().item()) < 0.05 * expected, name
            big += 1
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.equal(m.weight, torch.ones_like(m.weight)), name
            assert torch.equal(m.bias, torch.zeros_like(m.bias)), name
        elif isinstance(m, nn.Linear):
            # PyTorch's default: uniform within +-1/sqrt(fan_in), not the conv rule above.
            assert m.weight.abs().max() <= 1 / math.sqrt(m.in_features), name
    assert big >= 10  # layer3's 64->64 3x3 convs (36,864 weights each) at least


def test_init_stem_conv_std():
    """The 3->16 stem conv follows the same fan-out rule (averaged over a few seeds)."""
    stds = []
    for seed in range(8):
        torch.manual_seed(seed)
        stds.append(resnet(8).conv1.weight.std().item())
    assert abs(sum(stds) / len(stds) / math.sqrt(2.0 / (9 * 16)) - 1) < 0.05


@pytest.mark.parametrize('depth,num_branches', [(8, 3), (14, 2), (44, 3)])
def test_branch_export_matches_branch(depth, num_branches):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    one = one_resnet(depth, num_classes=10, num_branches=num_branches)
    perturb_batchnorm(one, g)
    one.eval()
    x = torch.randn(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits = one(x).members
    assert not torch.allclose(logits[0], logits[-1])  # the branches differ
    for k in range(num_branches):
        plain = resnet(depth, num_classes=10)
        plain.load_state_dict(branch_state_dict(one.state_dict(), k), strict=True)
        plain.eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(x), logits[k], rtol=0, atol=1e-6)


@pytest.mark.parametrize('num_branches', [2, 3])
def test_backward_reaches_every_parameter(num_branches):
    torch.manual_seed(0)
    model = one_resnet(8, num_classes=5, num_branches=num_branches)
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    loss = objective('one')(model(x), y, epoch=40)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_single_branch_gate_is_constant():
    """With m = 1 the softmax over one entry is 1 whatever the gate computes: z_e = z_1."""
    model = one_resnet(8, num_classes=5, num_branches=1)
    logits, ensemble, _ = model(torch.randn(4, 3, 32, 32))
    torch.testing.assert_close(ensemble, logits[0])

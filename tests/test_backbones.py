"""Backbone tests: the papers' parameter counts, the backbone contract, depth and width
refusals, ONE's branches over every stage of every backbone, the seed's ONE ResNet checkpoints
in the generic branched model, and DenseNet's memory-efficient blocks."""
import pytest
import torch

from models import (CIFAR_NETWORKS, NETWORKS, branch_points, branch_state_dict, branched, densenet,
                    one_resnet, resnet, resnext, vgg, wrn)
from models.vgg import CONVS_PER_STAGE, WIDTHS
from test_models import num_params, perturb_batchnorm

pytestmark = pytest.mark.usefixtures('one_thread')


def count_on_meta(build, **kwargs):
    """Parameters of a full-size network, built without allocating or initialising them."""
    with torch.device('meta'):
        return num_params(build(**kwargs))


# (constructor, kwargs, the paper's figure in millions on CIFAR-10, our exact count). Sources:
# ResNeXt-29: Xie et al. CVPR 2017, the CIFAR comparison table (8x64d 34.4M, 16x64d 68.1M);
# DenseNet: Huang et al. CVPR 2017, the CIFAR/SVHN error table's "Params" column;
# WRN: Zagoruyko & Komodakis BMVC 2016, the table of WRN-d-k on CIFAR (and the ResNeXt
# paper's CIFAR table, which repeats WRN-28-10's 36.5M).
PAPER_COUNTS = [
    (resnext, dict(depth=29, cardinality=8, base_width=64), 34.4, 34_426_698),
    (resnext, dict(depth=29, cardinality=16, base_width=64), 68.1, 68_155_210),
    (densenet, dict(depth=190, growth_rate=40), 25.6, 25_624_430),
    (densenet, dict(depth=250, growth_rate=24), 15.3, 15_324_406),
    (densenet, dict(depth=100, growth_rate=12), 0.8, 769_162),
    (densenet, dict(depth=40, growth_rate=12, bottleneck=False, compression=1), 1.0, 1_019_722),
    (densenet, dict(depth=100, growth_rate=12, bottleneck=False, compression=1), 7.0, 6_979_642),
    (densenet, dict(depth=100, growth_rate=24, bottleneck=False, compression=1), 27.2, 27_249_082),
    (wrn, dict(depth=28, widen_factor=10), 36.5, 36_479_194),
    (wrn, dict(depth=40, widen_factor=4), 8.9, 8_949_210),
    (wrn, dict(depth=16, widen_factor=8), 11.0, 10_961_370),
]


@pytest.mark.parametrize('build,kwargs,paper,exact', PAPER_COUNTS,
                         ids=[f'{b.__name__}-{"-".join(map(str, k.values()))}'
                              for b, k, _, _ in PAPER_COUNTS])
def test_param_count_matches_paper(build, kwargs, paper, exact):
    count = count_on_meta(build, num_classes=10, **kwargs)
    assert paper - 0.05 <= count / 1e6 < paper + 0.1     # the paper rounds or truncates
    assert count == exact


@pytest.mark.parametrize('depth', sorted(CONVS_PER_STAGE))
def test_vgg_param_count_by_hand(depth):
    """VGG has no CIFAR figure to pin against: count the paper's configuration by hand (3x3
    convs without bias, BN after each, one Linear 512 -> 10); VGG-16 is 14,724,042."""
    expected, inplanes = 512 * 10 + 10, 3
    for planes, convs in zip(WIDTHS, CONVS_PER_STAGE[depth]):
        for _ in range(convs):
            expected += 9 * inplanes * planes + 2 * planes
            inplanes = planes
    assert count_on_meta(vgg, depth=depth, num_classes=10) == expected
    assert depth != 16 or expected == 14_724_042


# The registry's smallest form of each network (models/registry.py), and the original
# (non-BC) DenseNet: small enough for the CPU, each still has every part of its full size.
TINY = {**{name: NETWORKS[name].tiny for name in CIFAR_NETWORKS},
        'densenet-nonbc': dict(depth=7, growth_rate=4, bottleneck=False, compression=1)}


def tiny(name, **kwargs):
    return constructor(name)(**TINY[name], **kwargs)


def constructor(name):
    return NETWORKS[name.split('-')[0]].build


@pytest.mark.parametrize('name', TINY)
def test_contract_shapes_and_backward(name):
    torch.manual_seed(0)
    model = tiny(name, num_classes=7).train()
    x = torch.randn(3, 3, 32, 32)
    h = model.stem(x)
    channels = [h.shape[1]]
    for stage in model.stage_names:
        h = getattr(model, stage)(h)
        channels.append(h.shape[1])
    assert tuple(channels) == model.stage_channels
    assert len(model.stage_channels) == len(model.stage_names) + 1
    features = model.features(x)
    assert features.shape == (3, channels[-1])
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.sum().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, key


def test_resnet_keeps_its_keys_and_forward():
    """The contract changed how ResNet is written, not what it is: bearpaw's keys, and the
    forward pass written out by hand."""
    torch.manual_seed(0)
    model = resnet(8, 10).eval()
    perturb_batchnorm(model, torch.Generator().manual_seed(1))
    prefixes = ('conv1.', 'bn1.', 'layer1.', 'layer2.', 'layer3.', 'fc.')
    assert all(key.startswith(prefixes) for key in model.state_dict())
    assert {key.split('.')[0] for key in model.state_dict()} == {p[:-1] for p in prefixes}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.layer3(model.layer2(model.layer1(model.relu(model.bn1(model.conv1(x))))))
        torch.testing.assert_close(model(x), model.fc(model.avgpool(h).flatten(1)),
                                   rtol=0, atol=0)


@pytest.mark.parametrize('build,kwargs,match', [
    (resnext, dict(depth=30), r'9n\+2 .*got 30'),
    (resnext, dict(depth='29'), r'9n\+2'),
    (resnext, dict(cardinality=0), 'cardinality'),
    (resnext, dict(base_width=2.5), 'base_width'),
    (densenet, dict(depth=30), r'6n\+4 .*bottleneck=True, got 30'),
    (densenet, dict(depth=41, bottleneck=False), r'3n\+4 .*bottleneck=False, got 41'),
    (densenet, dict(depth=190.0), r'6n\+4'),
    (densenet, dict(growth_rate=0), 'growth_rate'),
    (densenet, dict(compression=0), r'compression must be in \(0, 1\]'),
    (densenet, dict(compression=1.5), 'compression'),
    (densenet, dict(depth=10, growth_rate=1, compression=0.01), 'leaves no channels'),
    (densenet, dict(bottleneck='yes'), 'bottleneck must be True or False'),
    (wrn, dict(depth=26), r'6n\+4 .*got 26'),
    (wrn, dict(widen_factor=0), 'widen_factor'),
    (wrn, dict(drop=1.0), r'drop must be in \[0, 1\)'),
    (vgg, dict(depth=15), 'depth must be one of 11, 13, 16, 19, got 15'),
    (vgg, dict(depth=16.0), 'depth must be one of'),
    (resnet, dict(depth=30), r'6n\+2'),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_raise(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


# Every (backbone, branch point) pair of the tiny networks.
BRANCHINGS = [(name, point) for name in TINY for point in branch_points(tiny(name))]


@pytest.mark.parametrize('name,point', BRANCHINGS, ids=[f'{n}-{p}' for n, p in BRANCHINGS])
def test_trunk_plus_branch_is_the_plain_backbone(name, point):
    """Branch K's export has the plain backbone's keys and shapes, loads strictly, and gives
    the branch's own logits."""
    torch.manual_seed(0)
    model = branched(constructor(name), num_branches=2, branch_point=point, num_classes=5,
                     **TINY[name])
    perturb_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    plain = tiny(name, num_classes=5).eval()
    first = branch_points(plain).index(point)
    gate_linear = model.gate[2]
    assert gate_linear.in_features == plain.stage_channels[first]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, ensemble, _ = model(x)
        weights = model.gate(model.trunk(x))
    assert logits.shape == (2, 2, 5) and ensemble.shape == (2, 5)
    assert not torch.allclose(logits[0], logits[1])      # each branch has its own weights
    torch.testing.assert_close(ensemble, weights[:, :1] * logits[0] + weights[:, 1:] * logits[1])
    shapes = {key: value.shape for key, value in plain.state_dict().items()}
    for k in range(2):
        exported = branch_state_dict(model.state_dict(), k)
        assert {key: value.shape for key, value in exported.items()} == shapes
        plain.load_state_dict(exported, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(plain(x), logits[k], rtol=0, atol=1e-5)


# The last stage of each network, written out (VGG's stem-less five stages); a network added
# later is checked against its own stage count.
LAST_STAGE = {'resnet': 'stage3', 'resnext': 'stage3', 'densenet': 'stage3', 'wrn': 'stage3',
              'vgg': 'stage5', 'okddip_vgg': 'stage5', 'okddip_densenet': 'stage3',
              'densenet-nonbc': 'stage3'}


@pytest.mark.parametrize('name', TINY)
def test_default_branch_point_is_the_last_stage(name):
    model = branched(constructor(name), num_branches=2, **TINY[name])
    assert model.branch_point == LAST_STAGE.get(name, f'stage{len(tiny(name).stage_names)}')
    assert model.shared_stages == tiny(name).stage_names[:-1]


@pytest.mark.parametrize('kwargs,match', [
    (dict(branch_point='stage4'), "branch_point must be one of stage1, stage2, stage3 for "
                                  "ResNet, got 'stage4'"),
    (dict(branch_point='layer3'), 'branch_point must be one of'),
    (dict(gate='max'), "gate must be one of learned, average, got 'max'"),
    (dict(num_branches=0), 'num_branches must be an integer >= 1, got 0'),
])
def test_branched_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        branched(resnet, **{'depth': 8, **kwargs})


# docs/FIDELITY.md (Parameter counts, one_resnet, m = 3): the generic model over resnet has
# one_resnet's exact parameter counts.
ONE_COUNTS = [(32, 10, 1_175_639), (32, 100, 1_193_189), (110, 10, 4_294_263),
              (110, 100, 4_363_653)]


@pytest.mark.parametrize('depth,num_classes,expected', ONE_COUNTS)
def test_branched_resnet_param_counts(depth, num_classes, expected):
    assert count_on_meta(branched, backbone_fn=resnet, num_branches=3, branch_point='stage3',
                         depth=depth, num_classes=num_classes) == expected


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('point,gate', [('stage3', 'learned'), ('stage2', 'learned'),
                                        ('stage1', 'average')])
def test_one_resnet_checkpoint_loads_into_branched(point, gate, train):
    """A state dict of the seed's ONEResNet loads strictly into the generic model, which then
    computes exactly the same branch and ensemble logits."""
    torch.manual_seed(0)
    one = one_resnet(14, 10, num_branches=3, branch_point=point, gate=gate)
    perturb_batchnorm(one, torch.Generator().manual_seed(1))
    generic = branched(resnet, 3, point, gate, depth=14, num_classes=10)
    assert list(generic.state_dict()) == list(one.state_dict())
    generic.load_state_dict(one.state_dict(), strict=True)
    one.train(train)
    generic.train(train)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        for got, expected in zip(generic(x), one(x)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def saved_bytes(model, x):
    """Bytes of the distinct storages autograd keeps for the backward pass of model(x)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(x)
    return sum(storages.values()), out


@pytest.mark.parametrize('bottleneck', [True, False], ids=['bc', 'plain'])
def test_memory_efficient_densenet_matches_plain(bottleneck):
    """Same logits, gradients (weights and input) and BN running statistics; fewer tensors
    kept for the backward pass."""
    torch.manual_seed(0)
    kwargs = dict(depth=16 if bottleneck else 10, growth_rate=6, bottleneck=bottleneck,
                  compression=0.5, num_classes=5)
    plain = densenet(**kwargs).train()
    efficient = densenet(**kwargs, memory_efficient=True).train()
    efficient.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    inputs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    plain_bytes, plain_out = saved_bytes(plain, inputs[0])
    efficient_bytes, efficient_out = saved_bytes(efficient, inputs[1])
    assert efficient_bytes < 0.9 * plain_bytes           # 0.81 and 0.63 here; 0.36 at L=100
    torch.testing.assert_close(efficient_out, plain_out, rtol=0, atol=0)
    weights = torch.randn_like(plain_out)
    (plain_out * weights).sum().backward()
    (efficient_out * weights).sum().backward()
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, rtol=1e-5, atol=1e-6)
    grads = dict(plain.named_parameters())
    for key, p in efficient.named_parameters():
        torch.testing.assert_close(p.grad, grads[key].grad, rtol=1e-5, atol=1e-6, msg=key)
    buffers = dict(plain.named_buffers())
    for key, b in efficient.named_buffers():     # the recomputation did not count twice
        torch.testing.assert_close(b, buffers[key], rtol=0, atol=0, msg=key)
    assert buffers['stage1.block.layers.0.norm1.num_batches_tracked'] == 1

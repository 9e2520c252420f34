"""The OKDDip authors' networks (-a okddip_vgg, okddip_densenet; models/okddip_vgg.py and
okddip_densenet.py): their parameter counts under every method as the authors' code builds
them, and each layout's structure written out (the shared dense block, the OKDDip leader that
skips the final BatchNorm, the VGG's MLP head and branch dropout). Their logits were compared
with the authors' model files on the same weights (docs/FIDELITY.md, "The OKDDip code's
networks"); that code is not part of this repository: its outputs on this project's weights are
(tests/fixtures/okddip_code_outputs.pt), and the structure and counts are pinned besides."""
import os

import pytest
import torch

from conftest import ROOT
from methods import METHODS
from models import densenet, okddip_densenet
from test_models import num_params, perturb_batchnorm
from utils.setup import seed_everything

pytestmark = pytest.mark.usefixtures('one_thread')


def build(method, arch, num_classes=100, meta=True, **flags):
    args = METHODS[method].defaults(arch=arch, **flags)
    with torch.device('meta') if meta else torch.device('cpu'):
        return METHODS[method].build_model(args, num_classes), args


# The authors' code's counts for 100 classes (its vgg16 / densenetd40k12 under train.py,
# train_one.py with 3 branches (ONE), with --avg --bpscale and 4 (CL-ILR), train_GL.py with 4).
@pytest.mark.parametrize('method, arch, count', [
    ('baseline', 'okddip_vgg', 15_299_748), ('one', 'okddip_vgg', 30_619_509),
    ('clilr', 'okddip_vgg', 38_277_072), ('okddip', 'okddip_vgg', 38_342_608),
    ('baseline', 'okddip_densenet', 188_092), ('one', 'okddip_densenet', 215_409),
    ('clilr', 'okddip_densenet', 228_784), ('okddip', 'okddip_densenet', 233_008)])
def test_parameter_counts_are_the_authors_codes(method, arch, count):
    assert num_params(build(method, arch)[0]) == count


# The project's own networks beside them (docs/FIDELITY.md's last column): `vgg`, and
# `densenet` at 40-12, whose branched layouts give every branch its own dense block.
@pytest.mark.parametrize('method, arch, count', [
    ('baseline', 'vgg', 14_770_212), ('baseline', 'densenet', 188_092),
    ('one', 'densenet', 347_829), ('clilr', 'densenet', 427_144),
    ('okddip', 'densenet', 431_368)])
def test_the_projects_own_networks_counts_beside_theirs(method, arch, count):
    flags = {'depth': 40, 'growth_rate': 12} if arch == 'densenet' else {}
    assert num_params(build(method, arch, **flags)[0]) == count


def test_their_densenet_bc_100_40_has_a_24_channel_first_convolution():
    with torch.device('meta'):
        assert num_params(okddip_densenet(100, 40, num_classes=100)) == 8_107_136
        assert num_params(densenet(100, 40, num_classes=100)) == 8_430_620   # 2k = 80 channels


@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
def test_their_densenet_40_12_is_ours_on_the_same_weights(train):
    """At k = 12 their 24-channel stem is the DenseNet paper's 2k: the same network, with each
    transition grouped into the stage before it rather than after."""
    torch.manual_seed(0)
    theirs, ours = okddip_densenet(10, 12, num_classes=7), densenet(10, 12, num_classes=7)
    perturb_batchnorm(theirs, torch.Generator().manual_seed(1))
    ours.load_state_dict(dict(zip(ours.state_dict(), theirs.state_dict().values())))
    x = torch.randn(4, 3, 32, 32)
    theirs.train(train)
    ours.train(train)
    torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=0)


@pytest.mark.parametrize('method, extra_runs', [('one', 0), ('clilr', 0), ('okddip', 1)])
def test_their_densenet_branches_run_one_shared_block(method, extra_runs):
    """The block runs once per branch, as the authors' code, and OKDDip's once more for the
    leader (densenet_GL.py runs block 3 again for it): its BatchNorm statistics move as theirs."""
    model, args = build(method, 'okddip_densenet', 10, meta=False, depth=10, growth_rate=4)
    block = model.branches[0].stage3
    assert all(branch.stage3 is block for branch in model.branches)
    assert 'stage2.transition.conv.weight' in model.state_dict()       # transition 2: the trunk
    model.train()(torch.randn(4, 3, 32, 32))
    tracked = block.block.layers[0].norm1.num_batches_tracked
    assert tracked.item() == args.num_branches + extra_runs


def test_their_densenet_okddip_leader_skips_the_final_norm_and_attends_over_every_branch():
    torch.manual_seed(0)
    model, args = build('okddip', 'okddip_densenet', 10, meta=False, depth=10, growth_rate=4)
    perturb_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        trunk = model.trunk(x)
        branches = model.branches
        full = [b.fc(b.avgpool(b.relu(b.norm(b.stage3(trunk)))).flatten(1)) for b in branches]
        leader = branches[0].fc(branches[0].avgpool(branches[0].stage3(trunk)).flatten(1))
    m = args.num_branches
    torch.testing.assert_close(out.members[0], leader, rtol=0, atol=0)
    torch.testing.assert_close(out.members[1:], torch.stack(full[1:]), rtol=0, atol=0)
    values = out.extras['attention_values']
    torch.testing.assert_close(values, torch.stack(full[1:] + full[:1]), rtol=0, atol=0)
    assert out.extras['log_attention'].shape == (4, m - 1, m)
    torch.testing.assert_close(out.ensemble, values.mean(0))

    state = {'state_dict': model.state_dict(), 'num_branches': m, 'arch': 'okddip_densenet',
             'depth': 10, 'growth_rate': 4, 'final_norm': True}
    method = METHODS['okddip']
    assert method.deployed_keywords(state, 1) == {'final_norm': False}
    assert method.deployed_keywords(state, 2) == {}
    plain = okddip_densenet(10, 4, final_norm=False, num_classes=10).eval()
    plain.load_state_dict(method.deployable(state, 1))     # strict
    torch.testing.assert_close(plain(x), out.members[0], rtol=0, atol=0)
    peer = okddip_densenet(10, 4, num_classes=10).eval()
    peer.load_state_dict(method.deployable(state, 2))
    torch.testing.assert_close(peer(x), out.members[1], rtol=0, atol=0)


def test_their_vgg_has_biased_convolutions_and_an_mlp_head():
    model, _ = build('baseline', 'okddip_vgg', 100, meta=False, depth=11)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is not None and not c.bias.any() for c in convs)
    linears = [m for m in model.fc if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(512, 512), (512, 512),
                                                                 (512, 100)]
    assert all(abs(l.weight.std().item() - 0.01) < 0.002 for l in linears)   # N(0, 0.01)


@pytest.mark.parametrize('method, given, drop', [
    ('baseline', None, 0.0), ('dml', None, 0.0), ('one', None, 0.5), ('clilr', None, 0.5),
    ('okddip', None, 0.5), ('one', 0.0, 0.0), ('baseline', 0.3, 0.3)])
def test_their_vgg_drops_out_half_in_branches_by_default(method, given, drop):
    flags = {} if given is None else {'drop': given}
    model, args = build(method, 'okddip_vgg', 10, **flags)
    assert args.drop == drop
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {drop}


def test_their_vgg_okddip_attends_to_the_features_before_the_mlp():
    model, _ = build('okddip', 'okddip_vgg', 10, depth=11)
    assert model.attention.query.weight.shape == (64, 512)
    assert model.branches[0].head_names == ('flatten',)


# Each method with the OKDDip code's settings (methods/published.py, OKDDIP_CODE_VARIANTS).
OKDDIP_CODE_FLAGS = {
    'baseline': dict(nesterov=True, weight_decay=5e-4, schedule=[150, 225]),
    'one': dict(nesterov=True, weight_decay=5e-4, schedule=[150, 225], num_branches=4),
    'clilr': dict(nesterov=True, weight_decay=5e-4, form='okddip', temperature=3.0,
                  consistency_rampup=80.0),
    'okddip': dict(aggregate='logits')}


@pytest.mark.parametrize('method', OKDDIP_CODE_FLAGS)
@pytest.mark.parametrize('arch, dataset, errors', [
    ('okddip_vgg', 'cifar10', {'baseline': 6.12, 'clilr': 6.22, 'one': 6.16, 'okddip': 5.87}),
    ('okddip_vgg', 'cifar100', {'baseline': 26.19, 'clilr': 25.62, 'one': 25.63, 'okddip': 25.15}),
    ('okddip_densenet', 'cifar10', {'baseline': 6.87, 'clilr': 7.02, 'one': 6.85, 'okddip': 6.48}),
    ('okddip_densenet', 'cifar100',
     {'baseline': 28.97, 'clilr': 28.61, 'one': 28.76, 'okddip': 28.34})])
def test_a_run_as_the_okddip_code_trains_meets_its_table(method, arch, dataset, errors):
    """report.py puts the OKDDip paper's VGG-16 and DenseNet-40-12 numbers beside runs of the
    OKDDip code's networks and settings, and only beside those."""
    from methods.published import lookup
    from reports.runs import variant_flags
    args = {**vars(METHODS[method].defaults(arch=arch, **OKDDIP_CODE_FLAGS[method])),
            'dataset': dataset, 'method': method}
    variant, unchecked = variant_flags(method, args)
    entry = lookup(method, variant, arch, args['depth'], dataset, '1')[0]
    assert (entry.error, entry.secondary, unchecked) == (errors[method], True, ())
    plain = {**vars(METHODS[method].defaults(arch=arch)), 'dataset': dataset, 'method': method}
    assert not lookup(method, variant_flags(method, plain)[0], arch, args['depth'], dataset, '1')


# The authors' models' outputs on this project's weights (tests/fixtures/okddip_code_outputs.pt:
# DefangChen/OKDDip c6a05de's model files, instantiated once, given the weights of the models
# built below and run on the inputs below, eval mode then train mode with dropout off; the
# script that made it is described in the file's 'source').
FIXTURE = torch.load(os.path.join(ROOT, 'tests', 'fixtures', 'okddip_code_outputs.pt'),
                     weights_only=True)


def our_outputs(method, model, x):
    out = model(x)
    if method == 'baseline':
        return {'logits': out}
    if method == 'okddip':
        values = out.extras.get('attention_values', out.members[1:])
        mixed = torch.einsum('bij,jbc->bci', out.extras['log_attention'].exp(), values)
        return {'peers': out.members[1:], 'leader': out.members[0], 'mixed': mixed,
                'attended': values}
    return {'members': out.members, 'ensemble': out.ensemble}


@pytest.mark.parametrize('case', sorted(FIXTURE['cases']))
def test_the_authors_models_give_our_outputs_on_our_weights(case):
    method, arch = case.split('-')
    seed_everything(5)
    model = METHODS[method].build_model(METHODS[method].defaults(arch=arch), 10)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(123))
    for mode, expected in FIXTURE['cases'][case].items():
        model.train(mode == 'train')
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        with torch.no_grad():
            ours = our_outputs(method, model, x)
        for name, theirs in expected.items():
            torch.testing.assert_close(ours[name], theirs, rtol=1e-5, atol=1e-5,
                                       msg=f'{case} {mode} {name}')

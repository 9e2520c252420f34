"""OKDDip (Chen et al. 2020): the objective against direct formulas, what is (not) detached,
the peer attention, and its own flags."""
import math

import pytest
import torch
import torch.nn.functional as F

import cifar_okddip
import export_branch
from conftest import load, objective, tiny
from methods import METHODS
from models import one_resnet, resnet
from models.okddip import OKDDipResNet
from models.output import ModelOutput

SUBSET = ['--train-subset', 128]


def ce(logits, targets):
    return -F.log_softmax(logits, dim=1).gather(1, targets[:, None]).mean()


def kl(p, q):
    """KL(p || q) of probability rows, averaged over the batch."""
    return (p * (p.log() - q.log())).sum(1).mean()


def ramp(epoch, R):
    return 1.0 if R == 0 else math.exp(-5 * (1 - min(epoch, R) / R) ** 2)


def reference(logits, attention, targets, epoch, T=3.0, alpha=1.0, R=80, aggregate='probabilities',
              detach_targets=''):
    """sum CE + alpha w T^2 [sum_a KL(t_a || q'_a) + KL(t_m || q'_leader)], leader = logits[0],
    t_a = sum_b A_ab q'_b and t_m = mean_b q'_b (paper) or the softmax of the same mixtures of
    logits (the authors' code); attention A (B, peers, peers). detach_targets: '' (none, as
    OKDDip), 'peers' (the t_a), 'leader' (t_m) or 'all'."""
    leader, peers = logits[0], logits[1:]
    n = len(peers)
    q = [F.softmax(z / T, dim=1) for z in peers]
    dis1 = 0
    for a in range(n):
        if aggregate == 'probabilities':
            t = sum(attention[:, a, b, None] * q[b] for b in range(n))
        else:
            t = F.softmax(sum(attention[:, a, b, None] * peers[b] for b in range(n)) / T, dim=1)
        dis1 = dis1 + kl(t.detach() if detach_targets in ('peers', 'all') else t, q[a])
    t_m = sum(q) / n if aggregate == 'probabilities' else F.softmax(sum(peers) / n / T, dim=1)
    dis2 = kl(t_m.detach() if detach_targets in ('leader', 'all') else t_m,
              F.softmax(leader / T, dim=1))
    hard = sum(ce(z, targets) for z in logits)
    return hard + alpha * ramp(epoch, R) * T * T * (dis1 + dis2)


def okddip_output(logits, log_attention):
    """What the OKDDip model returns for these logits (leader first) and attention."""
    return ModelOutput(logits, logits[1:].mean(0), {'log_attention': log_attention})


def fixed_output():
    """The tensors the pinned values below were computed from: 4 branches, 6 images, 5 classes."""
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 5, (6,), generator=g)
    log_attention = F.log_softmax(torch.randn(6, 3, 3, generator=g, dtype=torch.float64), dim=-1)
    return logits, log_attention, targets


@pytest.mark.parametrize('aggregate, epoch, pinned', [
    ('probabilities', 0, 12.28700640585079), ('probabilities', 40, 13.63686383879922),
    ('probabilities', 80, 17.079433263337833), ('logits', 0, 12.286045038765897),
    ('logits', 40, 13.595985470150348), ('logits', 80, 16.93675373721171)])
def test_objective_value(aggregate, epoch, pinned):
    logits, log_attention, y = fixed_output()
    loss = objective('okddip', aggregate=aggregate)(okddip_output(logits, log_attention), y, epoch)
    expected = reference(logits, log_attention.exp(), y, epoch, aggregate=aggregate)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert loss.item() == pytest.approx(pinned, abs=1e-9)


def test_defaults_and_weight():
    loss = objective('okddip')
    assert (loss.temperature, loss.rampup_epochs, loss.alpha, loss.aggregate) == (
        3.0, 80, 1.0, 'probabilities')
    assert loss.rampup(0) == pytest.approx(math.exp(-5)) and loss.rampup(80) == 1.0
    assert objective('okddip', alpha=0.5).rampup(200) == 0.5
    logits, log_attention, y = fixed_output()
    output = okddip_output(logits, log_attention)
    torch.testing.assert_close(objective('okddip', alpha=0.5, temperature=2.0)(output, y, 30),
                               reference(logits, log_attention.exp(), y, 30, T=2.0, alpha=0.5))
    # the distillation terms are large enough here that a lost T^2 or leader term would show
    assert objective('okddip')(output, y, 80) - objective('okddip', alpha=0)(output, y, 80) > 1


@pytest.mark.parametrize('aggregate', ['probabilities', 'logits'])
def test_nothing_is_detached(aggregate):
    """Gradients equal those of the formula with live targets: the KL terms reach the attention
    (its only gradient) and, through t_a and t_m, the peers. Detached targets would differ."""
    logits, log_attention, y = fixed_output()

    def grads(fn):
        z, a = logits.clone().requires_grad_(True), log_attention.clone().requires_grad_(True)
        fn(z, a).backward()
        return z.grad, a.grad

    ours = grads(lambda z, a: objective('okddip', aggregate=aggregate)(okddip_output(z, a), y, 80))
    live = grads(lambda z, a: reference(z, a.exp(), y, 80, aggregate=aggregate))
    frozen = grads(lambda z, a: reference(z, a.exp(), y, 80, aggregate=aggregate,
                                          detach_targets='all'))
    torch.testing.assert_close(ours[0], live[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours[1], live[1], rtol=1e-10, atol=1e-12)
    assert ours[1].abs().max() > 1e-3 and frozen[1] is None
    assert (ours[0] - frozen[0]).abs().max() > 1e-3


@pytest.mark.parametrize('frozen', ['peers', 'leader'])
def test_each_target_sends_gradient_to_the_peers(frozen):
    """Freezing only the peers' targets t_a, or only the leader's target t_m, changes the
    peers' gradient: both distillation levels train the peers through their targets."""
    logits, log_attention, y = fixed_output()
    z = logits.clone().requires_grad_(True)
    objective('okddip')(okddip_output(z, log_attention), y, 80).backward()
    z_ref = logits.clone().requires_grad_(True)
    reference(z_ref, log_attention.exp(), y, 80, detach_targets=frozen).backward()
    assert (z.grad[1:] - z_ref.grad[1:]).abs().max() > 1e-3
    torch.testing.assert_close(z.grad[0], z_ref.grad[0])   # the leader's gradient is the same


# ----------------------------------------------------------------------------- model

def peer_features(model, x):
    trunk = model.trunk(x)
    return torch.stack([branch.features(trunk) for branch in model.branches[1:]], 1)


def test_attention_is_a_softmax_over_all_peers_including_itself():
    torch.manual_seed(0)
    model = OKDDipResNet(8, num_classes=10, num_branches=4).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        logits, ensemble, extras = model(x)
        log_attention = extras['log_attention']
        h = peer_features(model, x)
    attention = log_attention.exp()
    assert logits.shape == (4, 5, 10) and attention.shape == (5, 3, 3)
    torch.testing.assert_close(attention.sum(-1), torch.ones(5, 3))
    # alpha_ab = softmax_b(L(h_a) . E(h_b)) with no 1/sqrt(d) scaling, b = a included
    Wq, Wk = model.attention.query.weight, model.attention.key.weight
    assert Wq.shape == (8, 64) and model.attention.query.bias is None
    direct = torch.softmax((h @ Wq.T) @ (h @ Wk.T).transpose(1, 2), dim=-1)
    torch.testing.assert_close(attention, direct)
    assert attention.diagonal(dim1=1, dim2=2).min() > 0
    assert not torch.allclose(attention, attention.transpose(1, 2))   # asymmetric
    torch.testing.assert_close(ensemble, logits[1:].mean(0))           # the peers' ensemble


def test_attention_projections_are_trained_and_extra_to_a_one_net():
    torch.manual_seed(0)
    model = OKDDipResNet(8, num_classes=10, num_branches=4)
    count = sum(p.numel() for p in model.parameters())
    one = one_resnet(8, 10, 4, gate='average')
    assert count == sum(p.numel() for p in one.parameters()) + 2 * 64 * 8
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    objective('okddip')(model(x), y, 80).backward()
    assert model.attention.query.weight.grad.abs().sum() > 0
    assert model.attention.key.weight.grad.abs().sum() > 0


def test_bottleneck_projection_width():
    model = OKDDipResNet(56, num_classes=10, num_branches=3)
    assert model.attention.query.weight.shape == (256 // 8, 256)


def test_export_drops_the_attention_and_other_branches():
    model = OKDDipResNet(8, num_classes=10, num_branches=4)
    state = {'state_dict': model.state_dict(), 'num_branches': 4, 'arch': 'okddip_resnet',
             'depth': 8}
    method = METHODS['okddip']
    plain = method.deployable(state, 1)
    resnet(8, 10).load_state_dict(plain)   # strict: exactly a plain resnet
    for key, value in plain.items():
        source = key if not key.startswith(('layer3', 'fc')) else 'branches.0.' + key
        assert torch.equal(value, model.state_dict()[source]), key
    assert torch.equal(method.deployable(state, 3)['fc.weight'], model.branches[2].fc.weight)


# ----------------------------------------------------------------------------- its own flags
# (training, resume, -e, export and the shared bad flags: tests/test_methods_cli.py)

def test_defaults_are_the_authors_code_settings():
    args = METHODS['okddip'].defaults()
    assert (args.arch, args.num_branches, args.temperature, args.alpha, args.consistency_rampup,
            args.aggregate) == ('okddip_resnet', 4, 3.0, 1.0, 80, 'probabilities')
    assert (args.schedule, args.weight_decay, args.nesterov) == ([150, 225], 5e-4, True)


@pytest.fixture(scope='module')
def straight(fashion_root, tmp_path_factory):
    run = tmp_path_factory.mktemp('okddip') / 'straight'
    assert cifar_okddip.main(tiny(fashion_root, run, '--epochs', 1, *SUBSET)) == 0
    return run


def test_sgd_trains_the_attention_with_nesterov(straight):
    state = load(straight / 'checkpoint.pth.tar')
    group = state['optimizer']['param_groups'][0]
    assert (group['nesterov'], group['weight_decay']) == (True, 5e-4)
    # every parameter, the attention projections included, has been updated by SGD
    buffers = ('running_mean', 'running_var', 'num_batches_tracked')
    assert len(state['optimizer']['state']) == sum(not k.endswith(buffers)
                                                   for k in state['state_dict'])
    assert 'attention.query.weight' in state['state_dict']
    assert [round(r['rampup'], 7) for r in state['history']] == [0.0067379]


def test_evaluate_labels_the_leader_and_the_peers(straight, fashion_root, tmp_path, capsys):
    checkpoint = straight / 'checkpoint.pth.tar'
    capsys.readouterr()
    assert cifar_okddip.main(tiny(fashion_root, tmp_path / 'unused', '-e', '--resume',
                                  checkpoint)) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = ['leader (branch 1)'] + [f'peer (branch {k})' for k in '234'] + [
        'peer ensemble', 'mean of branches']
    assert [l.strip().rsplit(None, 1)[0] for l in lines[1:]] == expected
    assert cifar_okddip.main(tiny(fashion_root, tmp_path / 'u', '-e', '--resume', checkpoint,
                                  '--aggregate', 'logits')) == 2
    assert 'mismatch: aggregate' in capsys.readouterr().err


def test_the_exported_leader_has_no_attention(straight, tmp_path):
    out = tmp_path / 'leader.pth.tar'
    assert export_branch.main([str(straight / 'checkpoint.pth.tar'), '-o', str(out)]) == 0
    assert not any('attention' in k for k in load(out)['state_dict'])


@pytest.mark.parametrize('flags, named', [(['--alpha', -1], '--alpha'),
                                          (['--num-branches', 1], '--num-branches')])
def test_bad_flags_are_one_line(flags, named, fashion_root, tmp_path, capsys):
    assert cifar_okddip.main(tiny(fashion_root, tmp_path / 'r', *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and not (tmp_path / 'r').exists()


def test_two_branches_leader_and_one_peer():
    model = OKDDipResNet(8, num_classes=10, num_branches=2)
    output = model(torch.randn(4, 3, 32, 32))
    log_attention = output.extras['log_attention']
    assert log_attention.shape == (4, 1, 1) and torch.all(log_attention == 0)
    loss = objective('okddip')(output, torch.randint(0, 10, (4,)), 80)
    assert torch.isfinite(loss)


def test_the_authors_resnet_110_layout_and_its_parameter_count():
    """--depth-rule 9n+2 builds the OKDDip code's ResNet-110 (Bottleneck, 12 blocks a stage):
    3,874,016 parameters with 4 branches and 100 classes, 3,781,496 with 10, as their
    resnet_GL.resnet110(num_branches=4) (docs/FIDELITY.md, Parameter counts); the ONE code's
    rule (18 blocks a stage) gives 5,697,632."""
    def count(depth_rule, classes):
        args = METHODS['okddip'].defaults(depth=110, depth_rule=depth_rule)
        return sum(p.numel() for p in METHODS['okddip'].build_model(args, classes).parameters())
    assert (count('9n+2', 100), count('9n+2', 10), count('6n+2', 100)) == (
        3_874_016, 3_781_496, 5_697_632)
    assert sum(p.numel() for p in resnet(110, 100, '9n+2').parameters()) == 1_170_868


def test_the_depth_rule_is_part_of_the_run_and_of_its_export(fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    # 20 = 9 x 2 + 2 = 6 x 3 + 2: valid under both rules, so only the identity check refuses
    flags = ['--depth', 20, '--depth-rule', '9n+2', '--epochs', 1, *SUBSET]
    assert cifar_okddip.main(tiny(fashion_root, run, *flags)) == 0   # the later --depth wins
    assert load(run / 'checkpoint.pth.tar')['depth_rule'] == '9n+2'
    out = tmp_path / 'leader.pth.tar'
    assert export_branch.main([str(run / 'checkpoint.pth.tar'), '-o', str(out)]) == 0
    assert load(out)['depth_rule'] == '9n+2'
    capsys.readouterr()
    assert cifar_okddip.main(tiny(fashion_root, run, '--depth', 20, '--epochs', 2, *SUBSET,
                                  '--resume', 'auto')) == 2   # the default rule: refused
    assert 'mismatch: depth_rule' in capsys.readouterr().err

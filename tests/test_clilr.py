"""CL-ILR (Song & Chai 2018): the objective against direct formulas, the stop-gradient on the
soft targets, backpropagation rescaling, and its own flags."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

import cifar_clilr
from conftest import load, objective, tiny
from methods import METHODS
from methods.clilr import CLILRLoss
from models.clilr import CLILRResNet
from models.output import ModelOutput

SUBSET = ['--train-subset', 128]


def ce(logits, targets):
    return -F.log_softmax(logits, dim=1).gather(1, targets[:, None]).mean()


def ramp(epoch, R):
    return 1.0 if R == 0 else math.exp(-5 * (1 - min(epoch, R) / R) ** 2)


def paper_reference(logits, targets, T=2.0, beta=0.5, epoch=0, R=0):
    """sum_h beta CE(y, z_h) + (1 - beta) w CE(q_h, softmax(z_h / T)), q_h = softmax(mean of
    the other heads' logits / T) taken as a constant."""
    H, total = len(logits), 0
    for h in range(H):
        others = sum(logits[j] for j in range(H) if j != h) / (H - 1)
        q = F.softmax(others.detach() / T, dim=1)
        soft = -(q * F.log_softmax(logits[h] / T, dim=1)).sum(1).mean()
        total = total + beta * ce(logits[h], targets) + (1 - beta) * ramp(epoch, R) * soft
    return total


def okddip_form_reference(logits, targets, T=3.0, epoch=0, R=80):
    """DefangChen/OKDDip's CL-ILR: sum_h CE(z_h) + w T^2 KL(q_h || p_h), q_h not detached."""
    H, total = len(logits), 0
    for h in range(H):
        q = F.softmax(sum(logits[j] for j in range(H) if j != h) / (H - 1) / T, dim=1)
        p = F.softmax(logits[h] / T, dim=1)
        kl = (q * (q.log() - p.log())).sum(1).mean()
        total = total + ce(logits[h], targets) + ramp(epoch, R) * T * T * kl
    return total


def fixed_logits():
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(4, 6, 5, generator=g, dtype=torch.float64)
    return logits, torch.randint(0, 5, (6,), generator=g)


@pytest.mark.parametrize('R, epoch, pinned', [(0, 0, 9.707854270192042), (80, 0, 6.1513740524214),
                                              (80, 40, 7.153108956229421)])
def test_paper_objective_value(R, epoch, pinned):
    logits, y = fixed_logits()
    loss = CLILRLoss(temperature=2.0, beta=0.5, rampup_epochs=R, form='paper')(ModelOutput(logits, logits.mean(0)), y, epoch)
    torch.testing.assert_close(loss, paper_reference(logits, y, epoch=epoch, R=R),
                               rtol=1e-12, atol=1e-12)
    assert loss.item() == pytest.approx(pinned, abs=1e-9)


@pytest.mark.parametrize('R, epoch, pinned', [(0, 0, 18.400782458257662),
                                              (80, 0, 12.295909586693442),
                                              (80, 40, 14.015436721471103)])
def test_okddip_form_value(R, epoch, pinned):
    logits, y = fixed_logits()
    loss = CLILRLoss(temperature=3.0, beta=0.5, rampup_epochs=R, form='okddip')(ModelOutput(logits, logits.mean(0)), y, epoch)
    torch.testing.assert_close(loss, okddip_form_reference(logits, y, epoch=epoch, R=R))
    assert loss.item() == pytest.approx(pinned, abs=1e-9)


def test_defaults_are_the_paper():
    loss = objective('clilr')
    assert (loss.temperature, loss.beta, loss.rampup(0), loss.form) == (2.0, 0.5, 1.0, 'paper')


def test_the_pinned_value_tells_the_variants_apart():
    """T^2 on the soft term, or a soft target averaging all heads (self included), would
    move the pinned value by far more than its tolerance."""
    logits, y = fixed_logits()
    loss = objective('clilr')(ModelOutput(logits, logits.mean(0)), y, 0)
    soft = (loss - sum(0.5 * ce(z, y) for z in logits)) / 0.5
    soft_all = sum(-(F.softmax(logits.mean(0) / 2, 1) * F.log_softmax(z / 2, 1)).sum(1).mean()
                   for z in logits)
    assert soft > 0.1 and abs(soft_all - soft) > 0.01


def test_no_gradient_through_the_soft_targets():
    """Closed form with q_h constant: dL/dz_h = [beta (softmax(z_h) - y) + (1 - beta) / T
    (softmax(z_h / T) - q_h)] / B. A gradient through q_h or a T^2 factor breaks it."""
    logits, y = fixed_logits()
    z = logits.clone().requires_grad_(True)
    CLILRLoss(temperature=2.0, beta=0.5, rampup_epochs=0, form='paper')(ModelOutput(z, z.mean(0)), y, 0).backward()
    onehot = F.one_hot(y, 5).double()
    H, B, T = 4, 6, 2.0
    for h in range(H):
        q = F.softmax(sum(logits[j] for j in range(H) if j != h) / (H - 1) / T, dim=1)
        expected = (0.5 * (F.softmax(logits[h], 1) - onehot)
                    + 0.5 / T * (F.softmax(logits[h] / T, 1) - q)) / B
        torch.testing.assert_close(z.grad[h], expected, rtol=1e-10, atol=1e-12)
    # The okddip form does send gradient through q_h: its gradient is not that of a constant q.
    z2 = logits.clone().requires_grad_(True)
    CLILRLoss(temperature=3.0, beta=0.5, rampup_epochs=0, form='okddip')(ModelOutput(z2, z2.mean(0)), y, 0).backward()
    z3 = logits.clone().requires_grad_(True)
    detached = sum(ce(z3[h], y) + 9 * (F.softmax(q.detach(), 1) * (F.log_softmax(q.detach(), 1)
               - F.log_softmax(z3[h] / 3, 1))).sum(1).mean()
                   for h, q in ((h, sum(z3[j] for j in range(H) if j != h) / (H - 1) / 3)
                                for h in range(H)))
    detached.backward()
    assert (z2.grad - z3.grad).abs().max() > 1e-3


def trunk_and_branch_grads(model, x, y):
    model.zero_grad()
    objective('clilr')(model(x), y, 0).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    trunk = {n: g for n, g in grads.items() if not n.startswith('branches.')}
    return trunk, {n: g for n, g in grads.items() if n.startswith('branches.')}


@pytest.mark.parametrize('heads', [4, 3])
def test_rescaling_divides_the_trunk_gradient_by_the_number_of_heads(heads):
    torch.manual_seed(0)
    # 1/4 scales exactly in float32; 1/3 rounds, so that case is checked in float64.
    dtype = torch.float32 if heads == 4 else torch.float64
    rescaled = CLILRResNet(8, num_classes=10, num_branches=heads, rescale=True).to(dtype)
    plain = copy.deepcopy(rescaled)
    plain.rescale = False
    x, y = torch.randn(8, 3, 32, 32, dtype=dtype), torch.randint(0, 10, (8,))
    trunk_on, branch_on = trunk_and_branch_grads(rescaled, x, y)
    trunk_off, branch_off = trunk_and_branch_grads(plain, x, y)
    assert trunk_on.keys() == trunk_off.keys() and 'layer2.0.conv1.weight' in trunk_on
    for name in trunk_on:
        assert trunk_off[name].abs().sum() > 0, name
        if heads == 4:   # a power of two: scaling commutes exactly with every rounding
            assert torch.equal(trunk_on[name], trunk_off[name] / 4), name
        else:
            torch.testing.assert_close(trunk_on[name], trunk_off[name] / heads, rtol=1e-9,
                                       atol=1e-15)
    for name in branch_on:   # the heads' own layers are untouched
        assert torch.equal(branch_on[name], branch_off[name]), name
    with torch.no_grad():   # and the forward is the identity
        out_on, out_off = rescaled(x), plain(x)
    assert torch.equal(out_on[0], out_off[0])


def test_model_is_the_one_layout_without_gate():
    model = CLILRResNet(8, num_classes=10, num_branches=4)
    assert model.gate is None
    logits, ensemble, _ = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (4, 2, 10)
    torch.testing.assert_close(ensemble, logits.mean(0))


# ----------------------------------------------------------------------------- its own flags
# (training, resume, -e, export and the shared bad flags: tests/test_methods_cli.py)

def test_defaults_are_the_reference_code_settings():
    args = METHODS['clilr'].defaults()
    assert (args.arch, args.num_branches, args.no_rescaling, args.form) == (
        'clilr_resnet', 4, False, 'paper')
    assert (args.schedule, args.weight_decay, args.nesterov) == ([150, 225], 1e-4, False)


@pytest.fixture(scope='module')
def straight(fashion_root, tmp_path_factory):
    run = tmp_path_factory.mktemp('clilr') / 'straight'
    assert cifar_clilr.main(tiny(fashion_root, run, '--epochs', 1, *SUBSET)) == 0
    return run


def test_the_checkpoint_records_rescaling_and_form(straight, fashion_root, tmp_path, capsys):
    state = load(straight / 'checkpoint.pth.tar')
    assert (state['rescaling'], state['form']) == (True, 'paper')
    assert [row['rampup'] for row in state['history']] == [1.0]
    capsys.readouterr()
    assert cifar_clilr.main(tiny(fashion_root, tmp_path / 'u', '-e', '--resume',
                                 straight / 'checkpoint.pth.tar', '--no-rescaling')) == 2
    assert 'mismatch: rescaling' in capsys.readouterr().err


@pytest.mark.parametrize('flags, named', [(['--beta', 0], '--beta'), (['--beta', 1.5], '--beta'),
                                          (['--num-branches', 1], '--num-branches')])
def test_bad_flags_are_one_line(flags, named, fashion_root, tmp_path, capsys):
    assert cifar_clilr.main(tiny(fashion_root, tmp_path / 'r', *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and not (tmp_path / 'r').exists()

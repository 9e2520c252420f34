"""Loss tests: the ONE objective and the baseline against direct formulas (docs/FIDELITY.md,
Objectives)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import objective
from methods.baseline import CrossEntropy
from methods.one import ONELoss
from models import one_resnet
from models.output import ModelOutput, column_hits


pytestmark = pytest.mark.usefixtures('one_thread')


def ce(logits, targets):
    """Mean cross-entropy, written out: -log softmax(z)[y]."""
    return -F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1).mean()


def kl_times_t2(teacher, student, T):
    """T^2 * KL(p_teacher || p_student), p = softmax(z / T), averaged over the batch."""
    p_t, p_s = F.softmax(teacher / T, dim=1), F.softmax(student / T, dim=1)
    return T * T * (p_t * (p_t.log() - p_s.log())).sum(1).mean()


def ramp(epoch, R):
    return 1.0 if R == 0 else math.exp(-5 * (1 - min(max(epoch, 0), R) / R) ** 2)


def one_reference(logits, ensemble, targets, epoch, T, R):
    """docs/FIDELITY.md (Objectives, ONE): sum_i CE(z_i) + CE(z_e) + w(epoch) * sum_i T^2
    KL(p_e || p_i), p_e detached."""
    teacher = ensemble.detach()
    loss = sum(ce(z, targets) for z in logits) + ce(ensemble, targets)
    return loss + ramp(epoch, R) * sum(kl_times_t2(teacher, z, T) for z in logits)


def random_output(m=3, batch=6, classes=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(m, batch, classes, generator=g, dtype=dtype)
    ensemble = 3 * torch.randn(batch, classes, generator=g, dtype=dtype)
    targets = torch.randint(0, classes, (batch,), generator=g)
    return logits, ensemble, targets


@pytest.mark.parametrize('T', [1.0, 3.0, 4.5])
@pytest.mark.parametrize('epoch', [0, 40, 80, 200])
def test_one_loss_value(epoch, T):
    logits, ensemble, targets = random_output()
    loss = ONELoss(temperature=T, rampup_epochs=80, distill=True)(ModelOutput(logits, ensemble), targets, epoch)
    expected = one_reference(logits, ensemble, targets, epoch, T, 80)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    # The KL part is large enough here that a wrong weight, T or reduction would show.
    assert sum(kl_times_t2(ensemble, z, T) for z in logits) > 0.1


@pytest.mark.parametrize('epoch', [0, 40, 80, 200])
def test_one_loss_defaults_are_spec(epoch):
    """T = 3 and R = 80 unless told otherwise."""
    logits, ensemble, targets = random_output(seed=1)
    torch.testing.assert_close(objective('one')(ModelOutput(logits, ensemble), targets, epoch),
                               one_reference(logits, ensemble, targets, epoch, 3.0, 80))


def test_one_loss_rampup_zero():
    logits, ensemble, targets = random_output(seed=2)
    torch.testing.assert_close(objective('one', consistency_rampup=0)(ModelOutput(logits, ensemble), targets, 0),
                               one_reference(logits, ensemble, targets, 0, 3.0, 0))


def test_one_loss_rampup_matches_schedule():
    loss = objective('one', consistency_rampup=80)
    assert loss.rampup(0) == pytest.approx(math.exp(-5))
    assert loss.rampup(80) == pytest.approx(1.0)
    assert CrossEntropy().rampup(10) == 0


@pytest.mark.parametrize('epoch', [0, 200])
def test_kl_sends_no_gradient_to_ensemble(epoch):
    """d loss / d z_e is the gradient of CE(z_e) alone; d loss / d z_i uses a constant p_e."""
    logits, ensemble, targets = random_output(seed=3)
    logits.requires_grad_(True)
    ensemble.requires_grad_(True)
    objective('one')(ModelOutput(logits, ensemble), targets, epoch).backward()

    ens_only = ensemble.detach().clone().requires_grad_(True)
    ce(ens_only, targets).backward()
    torch.testing.assert_close(ensemble.grad, ens_only.grad)

    branch = logits.detach().clone().requires_grad_(True)
    one_reference(branch, ensemble.detach(), targets, epoch, 3.0, 80).backward()
    torch.testing.assert_close(logits.grad, branch.grad)


def test_gate_gets_gradient_from_ensemble_ce_only():
    """Through a real model: the gate's gradient from the whole ONE loss equals its gradient
    from CE(z_e) alone, so the KL terms do not train the gate."""
    torch.manual_seed(0)
    model = one_resnet(8, num_classes=5, num_branches=3)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))

    def gate_grads(objective):
        model.zero_grad()
        objective(model(x)).backward()
        return [p.grad.clone() for p in model.gate.parameters()]

    full = gate_grads(lambda out: objective('one')(out, y, 200))
    ens = gate_grads(lambda out: F.cross_entropy(out[1], y))
    assert any(g.abs().sum() > 0 for g in ens)
    for a, b in zip(full, ens):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('classes', [2, 10, 100])
def test_cross_entropy_plain_logits(classes):
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(7, classes, generator=g)
    targets = torch.randint(0, classes, (7,), generator=g)
    torch.testing.assert_close(CrossEntropy()(logits, targets, epoch=5),
                               F.cross_entropy(logits, targets))


def test_cross_entropy_of_branches_ignores_ensemble():
    logits, ensemble, targets = random_output(seed=4)
    expected = sum(F.cross_entropy(z, targets) for z in logits)
    torch.testing.assert_close(CrossEntropy()(ModelOutput(logits, ensemble), targets, 0), expected)


@pytest.mark.parametrize('loss_fn', [CrossEntropy(), objective('one')], ids=['ce', 'one'])
@pytest.mark.parametrize('batch_size', [6, 12, 128])
def test_batch_size_divides_the_sum(loss_fn, batch_size):
    """A rank passes the global batch size: the loss is then sum / batch_size."""
    logits, ensemble, targets = random_output(seed=5)  # 6 samples
    output = logits[0] if isinstance(loss_fn, CrossEntropy) else ModelOutput(logits, ensemble)
    mean = loss_fn(output, targets, 30)
    torch.testing.assert_close(loss_fn(output, targets, 30, batch_size=batch_size),
                               mean * len(targets) / batch_size)


def test_batch_size_split_sums_to_whole():
    """Two halves of a batch, each divided by the global size, add up to the whole."""
    logits, ensemble, targets = random_output(seed=6, batch=8)
    loss = objective('one')
    whole = loss(ModelOutput(logits, ensemble), targets, 50)
    halves = sum(loss(ModelOutput(logits[:, s], ensemble[s]), targets[s], 50, batch_size=8)
                 for s in (slice(0, 3), slice(3, 8)))
    torch.testing.assert_close(halves, whole)


def test_each_column_counts_the_part_of_the_output_it_names():
    """'1'..'m' count a member, 'ens' the ensemble, any other name an extra (KD's teacher);
    plain logits are member 1."""
    targets = torch.tensor([0, 1, 2, 1])
    branch1 = torch.eye(3)[[0, 1, 2, 1]]          # all right
    branch2 = torch.eye(3)[[1, 1, 0, 0]]          # only sample 1 right
    ensemble = torch.eye(3)[[0, 2, 2, 0]]         # samples 0 and 2 right
    teacher = torch.eye(3)[[0, 1, 0, 0]]          # samples 0 and 1 right
    output = ModelOutput(torch.stack([branch1, branch2]), ensemble, {'teacher': teacher})
    # row 0: top-1 hits; row 1: top-5 (with 3 classes every target is among them)
    assert column_hits(output, targets, ['1', '2', 'ens']).tolist() == [[4, 1, 2], [4, 4, 4]]
    assert column_hits(output, targets, ['2', 'teacher']).tolist()[0] == [1, 2]
    assert column_hits(branch2, targets, ['1']).tolist()[0] == [1]
    with pytest.raises(KeyError, match="no 'features'"):
        column_hits(output, targets, ['1', 'features'])
    with pytest.raises(KeyError, match='no ensemble'):
        column_hits(branch2, targets, ['ens'])


@pytest.mark.parametrize('name, flags', [
    ('one', {}), ('clilr', {'beta': 0.3}), ('clilr', {'form': 'okddip', 'consistency_rampup': 80}),
    ('okddip', {}), ('okddip', {'aggregate': 'logits', 'alpha': 0.7})])
def test_a_weight_tensor_is_the_ramp_up_to_the_bit(name, flags):
    """A graphed step reads the epoch's ramp-up weight from a float32 tensor (utils/graphs.py):
    the loss and its gradients are those of the eager step's Python number, bit for bit."""
    from methods import METHODS
    args = METHODS[name].defaults(depth=8, **flags)
    torch.manual_seed(0)
    model = METHODS[name].build_model(args, 10)
    images, targets = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    loss_fn = METHODS[name].objective(args)
    for epoch in (0, 7, 33, 200):
        results = []
        for weight in (None, torch.tensor(loss_fn.rampup(epoch), dtype=torch.float32)):
            model.zero_grad()
            kwargs = {} if weight is None else {'weight': weight}
            loss = loss_fn(model(images), targets, epoch, batch_size=6, **kwargs)
            loss.backward()
            results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
        (eager, eager_grads), (graphed, graphed_grads) = results
        assert torch.equal(eager, graphed), epoch
        assert all(torch.equal(a, b) for a, b in zip(eager_grads, graphed_grads)), epoch

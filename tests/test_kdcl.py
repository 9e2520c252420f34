"""KDCL (Guo et al., CVPR 2020): each ensemble rule against the paper's formula computed by hand,
the objective's value (pinned), what is detached, the input distortion, and its own flags.
(Training, resume, -e, export and bad flags of every method: tests/test_methods_cli.py.)"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import objective
from methods import METHODS
from methods.kdcl import minlogit_target, naive_target
from models.cohort import Cohort
from models.output import ModelOutput

# Two students, three samples, four classes.
LOGITS = torch.tensor([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 0.4], [1.0, -2.0, 0.0, 3.0]],
                       [[0.0, 1.5, 0.5, -0.5], [2.0, -1.0, 0.0, 1.0], [-1.0, 0.0, 2.5, 0.5]]])
TARGETS = torch.tensor([0, 3, 2])


def test_naive_takes_per_sample_the_student_with_the_lowest_cross_entropy():
    """Eq. 4: z_t = z_k, k = argmin_i CE(z_i, y); here student 1 for samples 0 and 1 (the
    only one whose true-class logit leads), student 2 for sample 2."""
    ce = [[F.cross_entropy(LOGITS[i, b:b + 1], TARGETS[b:b + 1]).item() for b in range(3)]
          for i in range(2)]
    chosen = [min(range(2), key=lambda i: ce[i][b]) for b in range(3)]
    assert chosen == [0, 0, 1]
    expected = torch.stack([LOGITS[chosen[b], b] for b in range(3)])
    assert torch.equal(naive_target(LOGITS, TARGETS), expected)


def test_minlogit_is_the_classwise_minimum_of_the_shifted_logits():
    """Eqs. 6-7: z_t,j = min_i (z_i,j - z_i,c), written out element by element."""
    expected = torch.empty(3, 4)
    for b in range(3):
        c = TARGETS[b]
        for j in range(4):
            expected[b, j] = min(LOGITS[i, b, j] - LOGITS[i, b, c] for i in range(2))
    got = minlogit_target(LOGITS, TARGETS)
    assert torch.equal(got, expected)
    assert torch.all(got[torch.arange(3), TARGETS] == 0)   # the true class's logit is 0


@pytest.mark.parametrize('rule, pinned', [('naive', 4.246005), ('minlogit', 4.175889),
                                          ('mean', 3.531030)])
def test_objective_is_ce_plus_lambda_t2_kl_to_the_detached_target(rule, pinned):
    """L = sum_i [CE(z_i) + lambda T^2 KL(p_t || p_i)], batch-averaged, T = 2 and lambda = 1
    (the paper's CIFAR values), the target from the rule."""
    loss_fn = objective('kdcl', rule=rule)
    teacher = {'naive': naive_target, 'minlogit': minlogit_target,
               'mean': lambda z, y: z.mean(0)}[rule](LOGITS, TARGETS)
    T = 2.0
    expected = 0.0
    for z in LOGITS:
        p_t, log_p = F.softmax(teacher / T, 1), F.log_softmax(z / T, 1)
        kl = (p_t * (p_t.log() - log_p)).sum(1).mean()
        expected += F.cross_entropy(z, TARGETS) + T * T * kl
    got = loss_fn(ModelOutput(LOGITS), TARGETS, epoch=0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() == pytest.approx(pinned, abs=1e-5)
    assert loss_fn.rampup(0) == loss_fn.rampup(199) == 1.0


@pytest.mark.parametrize('rule', ['naive', 'minlogit', 'mean'])
def test_no_gradient_flows_through_the_target(rule):
    """The gradient of each student's logits is its CE's plus lambda T^2 KL's with the target
    held constant: (softmax(z_i) - y) / B + lambda T (p_i - p_t) / B."""
    logits = LOGITS.clone().requires_grad_()
    objective('kdcl', rule=rule)(ModelOutput(logits), TARGETS, epoch=0).backward()
    T, B = 2.0, 3
    target = {'naive': naive_target, 'minlogit': minlogit_target,
              'mean': lambda z, y: z.mean(0)}[rule](LOGITS, TARGETS)
    onehot = F.one_hot(TARGETS, 4).float()
    expected = (F.softmax(LOGITS, -1) - onehot) / B + T * (
        F.softmax(LOGITS / T, -1) - F.softmax(target / T, -1)) / B
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-7)


def test_defaults_are_the_papers_cifar_settings():
    args = METHODS['kdcl'].defaults()
    assert (args.num_nets, args.temperature, args.weight, args.rule, args.icl) == (
        2, 2.0, 1.0, 'naive', True)
    assert (args.epochs, args.schedule, args.lr, args.weight_decay, args.train_batch,
            args.momentum, args.nesterov) == (200, [100, 150], 0.1, 5e-4, 128, 0.9, False)
    assert METHODS['kdcl'].views(args) == 2
    assert METHODS['kdcl'].views(METHODS['kdcl'].defaults(icl=False)) == 1


def test_each_network_takes_its_own_view_and_evaluation_gives_all_the_same():
    class Tag(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3]
    cohort = Cohort(Tag, 3)
    views = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 2, 3, 1, 1)
    assert [z[0, 0].item() for z in cohort(views).members] == [0.0, 1.0, 2.0]
    assert torch.equal(cohort(views[1]).members, views[1].flatten(1).expand(3, 2, 3))


def test_the_ensemble_column_is_the_mean_of_the_students_logits():
    """KDCL's 'ens' (label-free, unlike naive and minlogit): the logit mean, where DML's
    cohort reports the mean probability."""
    method = METHODS['kdcl']
    torch.manual_seed(0)
    model = method.build_model(method.defaults(depth=8), 10).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert out.members.shape == (2, 4, 10)
    torch.testing.assert_close(out.ensemble, out.members.mean(0), rtol=0, atol=0)
    assert method.columns(method.defaults()) == ['1', '2', 'ens']


def test_icl_is_off_on_imagenet_and_refused_there_when_asked_for():
    method = METHODS['kdcl']
    assert method.defaults(dataset='imagenet').icl is False
    with pytest.raises(Exception, match='--icl: ImageNet'):
        method.check_flags(method.defaults(dataset='imagenet', icl=True))

"""DML (methods/dml.py): the objective against a direct computation, independent networks, the
simultaneous and alternating (Algorithm 1) updates, its paper's defaults and its own refusals
(training, resume, -e, export through the command line: tests/test_methods_cli.py)."""
import copy
import json
import math
import shutil

import pytest
import torch

import cifar_baseline
import cifar_dml
import export_branch
from conftest import load, objective, tiny
from methods import METHODS
from methods.dml import DMLLoss
from models import resnet
from models.cohort import Cohort
from models.output import ModelOutput
from utils.steps import train_step

pytestmark = pytest.mark.usefixtures('one_thread')

# Fixed logits (networks, batch, classes) and labels.
LOGITS = torch.tensor([[[2.0, -1.0, 0.5, 0.0], [0.3, 1.2, -0.7, 2.2], [-1.5, 0.4, 1.1, 0.2]],
                       [[1.0, 0.5, -0.5, 1.5], [-0.2, 2.0, 0.1, 0.0], [0.8, -1.0, 2.4, -0.3]],
                       [[-0.5, 1.5, 0.0, 0.7], [1.1, 0.2, 0.9, -1.3], [0.0, 0.6, -0.8, 1.9]]],
                      dtype=torch.float64)
LABELS = torch.tensor([0, 3, 2])
SUBSET = ['--train-subset', 256]
# Subprocesses on one thread too: several threads per process only thrash a busy 2-core machine.


def softmax(z, T):
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


def direct_dml(logits, labels, T):
    """The paper's L_i = CE(z_i) + 1/(m-1) sum_{j != i} KL(p_j || p_i), with T^2 for T != 1,
    summed over the networks and averaged over the batch, written out sample by sample."""
    m, total = len(logits), 0.0
    for i in range(m):
        for b, y in enumerate(labels.tolist()):
            z_i = logits[i, b].tolist()
            total += -math.log(softmax(z_i, 1.0)[y])
            p_i = softmax(z_i, T)
            for j in range(m):
                if j != i:
                    p_j = softmax(logits[j, b].tolist(), T)
                    kl = sum(q * (math.log(q) - math.log(p)) for q, p in zip(p_j, p_i))
                    total += T * T * kl / (m - 1)
    return total / len(labels)


@pytest.mark.parametrize('m, T, pinned', [
    (2, 1.0, 3.084731795544277),   # the paper: two networks, no temperature
    (2, 3.0, 3.424886870830933),
    (3, 1.0, 7.7832819563130515),  # 1/(m-1) = 1/2 on the pairwise terms
    (3, 3.0, 8.316412123767165),
])
def test_dml_loss_value(m, T, pinned):
    loss = DMLLoss(temperature=T, update='alternating')(ModelOutput(LOGITS[:m]), LABELS, epoch=0)
    assert loss.item() == pytest.approx(direct_dml(LOGITS[:m], LABELS, T), rel=1e-12)
    assert loss.item() == pytest.approx(pinned, rel=1e-12)
    assert DMLLoss(temperature=T, update='alternating').rampup(5) == 1.0


def test_peers_are_constant_targets():
    """dL_i/dz_j = 0 for j != i, so the gradient of sum_i L_i at z_j is that of L_j alone."""
    logits = LOGITS.clone().requires_grad_(True)
    loss = DMLLoss(temperature=3.0, update='alternating')
    z = list(logits)
    member = loss.member_loss(z[0], [z[1], z[2]], LABELS)
    grad = torch.autograd.grad(member, logits)[0]
    assert grad[0].abs().sum() > 0 and torch.all(grad[1:] == 0)
    total = torch.autograd.grad(loss(ModelOutput(logits), LABELS, 0), logits)[0]
    for j in range(3):
        alone = loss.member_loss(z[j], [p.detach() for k, p in enumerate(z) if k != j], LABELS)
        torch.testing.assert_close(total[j], torch.autograd.grad(alone, logits)[0][j] / 3)


def test_networks_are_independent():
    torch.manual_seed(0)
    cohort = Cohort(lambda: resnet(8, 10), 3)
    params = [list(net.parameters()) for net in cohort.nets]
    storages = [{p.untyped_storage().data_ptr() for p in ps} for ps in params]
    assert all(not (storages[i] & storages[j]) for i in range(3) for j in range(i + 1, 3))
    assert sum(p.numel() for p in cohort.parameters()) == 3 * sum(
        p.numel() for p in resnet(8, 10).parameters())
    first = [net.conv1.weight for net in cohort.nets]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    logits, ensemble, _ = cohort.eval()(torch.randn(4, 3, 32, 32))
    assert logits.shape == (3, 4, 10)
    torch.testing.assert_close(ensemble.exp(), logits.softmax(-1).mean(0))


# ----------------------------------------------------------------------------- update orders

def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def batches(n=2, size=16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def engine_steps(cohort, update, data):
    """What the engine does: DML.train_step with one SGD optimizer over every network."""
    optimizer = sgd(cohort.parameters())
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    cohort.train()
    for images, targets in data:
        METHODS['dml'].train_step(cohort, objective('dml', update=update), optimizer, scaler, images,
                                  targets, 0, len(targets), 'off')
    return cohort


def per_network_steps(cohort, data, recompute):
    """Reference: one optimizer per network. recompute=False: every network steps against the
    predictions made before any update (simultaneous); True: the paper's Algorithm 1, all
    predictions computed again before each network's update."""
    optimizers = [sgd(net.parameters()) for net in cohort.nets]
    loss = objective('dml')
    cohort.train()
    for images, targets in data:
        logits = [net(images) for net in cohort.nets]
        for i, (net, optimizer) in enumerate(zip(cohort.nets, optimizers)):
            if recompute and i > 0:
                logits = [other(images) for other in cohort.nets]
            peers = [z.detach() for j, z in enumerate(logits) if j != i]
            optimizer.zero_grad()
            (loss.member_loss(logits[i], peers, targets) / len(targets)).backward()
            optimizer.step()
    return cohort


def params(cohort, net):
    return list(cohort.nets[net].parameters())


def assert_params_equal(a, b, net):
    for p, q in zip(params(a, net), params(b, net)):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


@pytest.fixture
def cohort():
    torch.manual_seed(0)
    return Cohort(lambda: resnet(8, 10), 3)


def test_simultaneous_step_equals_per_network_steps(cohort):
    data = batches()
    ours = engine_steps(copy.deepcopy(cohort), 'simultaneous', data)
    reference = per_network_steps(copy.deepcopy(cohort), data, recompute=False)
    for net in range(3):
        assert_params_equal(ours, reference, net)
    # the engine's plain step over sum_i L_i is the same thing
    plain = copy.deepcopy(cohort).train()
    optimizer, scaler = sgd(plain.parameters()), torch.amp.GradScaler('cpu', enabled=False)
    for images, targets in data:
        train_step(plain, objective('dml'), optimizer, scaler, images, targets, 0, len(targets), 'off')
    for net in range(3):
        assert_params_equal(ours, plain, net)


def test_alternating_step_is_algorithm_1(cohort):
    """Two steps with momentum and weight decay: one optimizer over all networks must equal
    per-network optimizers (no momentum or decay for a network outside its turn), and each
    network after the first must step against its predecessors' updated predictions."""
    data = batches()
    ours = engine_steps(copy.deepcopy(cohort), 'alternating', data)
    reference = per_network_steps(copy.deepcopy(cohort), data, recompute=True)
    simultaneous = per_network_steps(copy.deepcopy(cohort), data, recompute=False)
    for net in range(3):
        assert_params_equal(ours, reference, net)
    # recomputing matters: from the second step on even network 1 differs, and networks 2
    # and 3 differ already in the first step
    one_step = engine_steps(copy.deepcopy(cohort), 'alternating', data[:1])
    one_simultaneous = per_network_steps(copy.deepcopy(cohort), data[:1], recompute=False)
    assert_params_equal(one_step, one_simultaneous, 0)
    for net in (1, 2):
        assert not torch.equal(params(one_step, net)[-1], params(one_simultaneous, net)[-1])
        assert not torch.equal(params(ours, net)[-1], params(simultaneous, net)[-1])


def test_alternating_updates_batchnorm_statistics_once_per_step(cohort):
    data = batches(n=1)
    alternating = engine_steps(copy.deepcopy(cohort), 'alternating', data)
    simultaneous = engine_steps(copy.deepcopy(cohort), 'simultaneous', data)
    for a, s in zip(alternating.buffers(), simultaneous.buffers()):
        assert torch.equal(a, s)
    tracked = [b for name, b in alternating.named_buffers() if name.endswith('num_batches_tracked')]
    assert tracked and all(b.item() == 1 for b in tracked)


def test_alternating_step_reports_the_pre_update_predictions_and_loss(cohort):
    """Accuracy is counted on each network's prediction before its update (as in the
    simultaneous order); the loss is the sum of the L_i each network stepped on."""
    (images, targets), = batches(n=1)
    reference = copy.deepcopy(cohort).train()
    optimizers = [sgd(net.parameters()) for net in reference.nets]
    with torch.no_grad():
        before = reference(images).members
    expected_loss = 0.0
    for i, optimizer in enumerate(optimizers):
        logits = [net(images) for net in reference.nets]
        member = objective('dml').member_loss(logits[i], [z.detach() for j, z in enumerate(logits)
                                                   if j != i], targets)
        expected_loss += member.item()
        optimizer.zero_grad()
        (member / len(targets)).backward()
        optimizer.step()
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    output, loss_sum = METHODS['dml'].train_step(cohort.train(), objective('dml'),
                                                 sgd(cohort.parameters()), scaler, images,
                                                 targets, 0, len(targets), 'off')
    torch.testing.assert_close(output[0], before)
    assert not loss_sum.requires_grad
    assert loss_sum.item() == pytest.approx(expected_loss, rel=1e-5)
    simultaneous = objective('dml')(ModelOutput(before), targets, 0).item() * len(targets)
    assert loss_sum.item() != pytest.approx(simultaneous, rel=1e-5)


# ----------------------------------------------------------------------------- command line

@pytest.mark.parametrize('flags, env, message', [
    (['--num-nets', '1'], {}, 'needs at least 2 networks, got 1'),
    (['--temperature', '-1'], {}, '--temperature must be > 0'),
    (['--compile'], {}, '--compile: the alternating order'),
    ([], {'RANK': '0', 'WORLD_SIZE': '2'}, 'under torchrun use --update simultaneous'),
])
def test_bad_flags(flags, env, message, fashion_root, tmp_path, capsys, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        code = cifar_dml.main(tiny(fashion_root, tmp_path / 'run', '--epochs', 1) + flags)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / 'run').exists()


def test_paper_defaults():
    args = METHODS['dml'].defaults()
    assert (args.train_batch, args.epochs, args.schedule, args.lr, args.gamma, args.momentum,
            args.nesterov, args.weight_decay) == (64, 200, [60, 120, 180], 0.1, 0.1, 0.9, True,
                                                  5e-4)
    assert (args.num_nets, args.temperature, args.update) == (2, 1.0, 'alternating')


@pytest.fixture(scope='module')
def straight(fashion_root, tmp_path_factory):
    run = tmp_path_factory.mktemp('dml') / 'straight'
    assert cifar_dml.main(tiny(fashion_root, run, '--epochs', 1, *SUBSET)) == 0
    return run


def test_a_checkpoint_of_the_other_update_order_is_refused(straight, fashion_root, tmp_path,
                                                          capsys):
    assert cifar_dml.main(tiny(fashion_root, tmp_path / 'u', '-e', '--resume',
                               straight / 'checkpoint.pth.tar', '--update', 'simultaneous')) == 2
    assert 'mismatch: update' in capsys.readouterr().err


def test_export_gives_network_k_as_a_plain_resnet(straight, fashion_root, tmp_path, capsys):
    checkpoint = straight / 'checkpoint.pth.tar'
    out = tmp_path / 'net2.pth.tar'
    assert export_branch.main([str(checkpoint), '--member', '2', '-o', str(out)]) == 0
    exported, state = load(out), load(checkpoint)
    assert exported['arch'] == 'resnet' and 'optimizer' not in exported
    net2 = {k[len('nets.1.'):]: v for k, v in state['state_dict'].items()
            if k.startswith('nets.1.')}
    assert exported['state_dict'].keys() == net2.keys() == resnet(8, 10).state_dict().keys()
    assert all(torch.equal(exported['state_dict'][k], net2[k]) for k in net2)
    assert not torch.equal(exported['state_dict']['fc.weight'],
                           state['state_dict']['nets.0.fc.weight'])
    capsys.readouterr()
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume', out)) == 0
    accuracy = float(capsys.readouterr().out.splitlines()[1].split()[-1])
    assert accuracy == pytest.approx(state['history'][-1]['test_acc_2'], abs=0.005)
    assert export_branch.main([str(checkpoint), '--member', '3', '-o', str(tmp_path / 'n3')]) == 2


def test_a_run_from_before_num_nets_resumes_and_exports(straight, fashion_root, tmp_path):
    """DML recorded its network count as num_branches until 2026-12 (in checkpoints and
    args.json): such a run resumes, and its networks export, as a run of today."""
    old = tmp_path / 'old'
    shutil.copytree(straight, old)
    for name in ('checkpoint.pth.tar', 'model_best.pth.tar'):
        state = load(old / name)
        state['num_branches'] = state.pop('num_nets')
        state['args']['num_branches'] = state['args'].pop('num_nets')
        torch.save(state, old / name)
    args = json.loads((old / 'args.json').read_text())
    args['num_branches'] = args.pop('num_nets')
    (old / 'args.json').write_text(json.dumps(args))
    assert cifar_dml.main(tiny(fashion_root, old, '--epochs', 2, *SUBSET, '--resume', 'auto')) == 0
    state = load(old / 'checkpoint.pth.tar')
    assert (state['epoch'], state['num_nets'], state['args']['num_nets']) == (2, 2, 2)
    assert export_branch.main([str(old / 'model_best.pth.tar'), '--branch', '2',
                               '-o', str(tmp_path / 'net2.pth.tar')]) == 0

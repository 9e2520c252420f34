"""DML: deep mutual learning (Zhang, Xiang, Hospedales, Lu, CVPR 2018, arXiv 1706.00384).

m independent CIFAR ResNets (--num-nets, default 2) learn from the labels and from each other.
Objective of network i, per mini-batch of B images, with logits z_1..z_m:

    L_i = CE(z_i, y) + 1/(m-1) sum_{j != i} T^2 KL(p_j || p_i),   p = softmax(z / T),

summed over the batch and divided by B (the KL summed over classes), p_j detached (a constant
target: L_i sends no gradient into network j). The paper has no temperature; --temperature 1
(the default) is exactly its loss, and T^2 only matters for T != 1.

Update order (--update):
  alternating   (default) the paper's Algorithm 1: on one mini-batch, network 1 takes its SGD
                step against the others' predictions, then the predictions are recomputed and
                network 2 steps against network 1's updated prediction, and so on. Each network's
                BatchNorm running statistics are updated once per step, in its own forward pass:
                the recomputed predictions use batch statistics (training mode, as every training
                forward) and leave the running statistics as they were. One SGD optimizer over
                all networks serves: before each network's step every gradient is set to None,
                and SGD skips parameters without a gradient, so the other networks get no weight
                decay and no momentum step. Runs eagerly (no torch.compile); refused under
                torchrun, where DistributedDataParallel reduces every parameter's gradient per
                backward pass.
  simultaneous  all predictions once, then one optimizer step over sum_i L_i. Because p_j is
                detached, L_i has gradient only with respect to network i, so this equals m
                per-network steps taken against the same, pre-step predictions.
The two orders give the same first network's step; they differ from the second on.

Columns: network 1..m, and 'ens', the mean of the m networks' probabilities (its logits are the
log of that mean). The paper reports single networks; 'ens' is for comparison with ONE-E.
Training settings are the paper's for CIFAR-100: SGD with Nesterov momentum 0.9, lr 0.1, batch
64, LR x 0.1 every 60 epochs, 200 epochs. The paper gives no weight decay; it says it follows
Wide ResNet's settings, whose weight decay is 5e-4. Its crops pad by reflection, ours by zeros
(the harness's CIFAR pipeline, as ONE's).

Where other code differs. The authors' TensorFlow code (Market-1501 only) also updates the
networks in turn with recomputed predictions, but every network's update dequeues a new
mini-batch; it sums the KL terms without 1/(m-1) (the same for m = 2) and adds 1e-8 inside the
log. Common PyTorch reimplementations update simultaneously. OKDDip's train_DML.py: by
default 4 networks, T = 3 with T^2, and each network distils from the mean of the others'
LOGITS (one target, not m-1 pairwise terms; pairwise with 1/(m-1) under its --type option),
without detaching that target, so the gradient also flows into the peers; one optimizer step
over all networks; its ensemble accuracy uses the mean of logits.
"""
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from models.output import as_output
from utils.distributed import world_from_env
from utils.errors import UserError
from utils.losses import distillation_kl
from utils.steps import autocast, train_step
from .base import CohortMethod, check_temperature

UPDATES = ('alternating', 'simultaneous')


class DMLLoss:
    """sum_i [CE(z_i, y) + 1/(m-1) sum_{j != i} T^2 KL(p_j || p_i)], p_j detached, averaged
    over the batch."""

    def __init__(self, *, temperature, update):
        self.temperature, self.update = temperature, update

    def rampup(self, epoch):
        """The weight of the mimicry term (constant), logged as w."""
        return 1.0

    def member_loss(self, logits, peers, targets):
        """L_i summed over the batch, for logits z_i (B, C) and the peers' logits [z_j]."""
        mimicry = sum(distillation_kl(logits, peer, self.temperature) for peer in peers)
        return F.cross_entropy(logits, targets, reduction='sum') + mimicry / len(peers)

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        logits = as_output(output).members
        loss = sum(self.member_loss(z, [p for j, p in enumerate(logits) if j != i], targets)
                   for i, z in enumerate(logits))
        return loss / (batch_size or len(targets))


def unwrap(model):
    """The Cohort inside torch.compile's and DistributedDataParallel's wrappers."""
    while True:
        if hasattr(model, '_orig_mod'):
            model = model._orig_mod
        elif isinstance(model, DistributedDataParallel):
            model = model.module
        else:
            return model


@torch.no_grad()
def fresh_logits(net, images, amp):
    """net's logits in its current (training) mode, leaving its BatchNorm running statistics
    (and every other buffer) as they were."""
    saved = [buffer.clone() for buffer in net.buffers()]
    with autocast(amp, images.device):
        logits = net(images)
    for buffer, value in zip(net.buffers(), saved):
        buffer.copy_(value)
    return logits


def mutual_train_step(model, objective, optimizer, scaler, images, targets, epoch, batch_size,
                      amp, weight=None):
    """One step of --update simultaneous (the engine's step over sum_i L_i) or alternating
    (Algorithm 1: network by network, recomputing the updated network's prediction). Returns
    (output of the networks before their updates, loss summed over the images)."""
    if objective.update == 'simultaneous':   # (DML's weight is constant: `weight` unused)
        return train_step(model, objective, optimizer, scaler, images, targets, epoch,
                          batch_size, amp)
    batch_size = batch_size or len(targets)
    nets = unwrap(model).nets
    with autocast(amp, images.device):
        logits = [net(images) for net in nets]  # one graph per network; BN statistics move once
    current = [z.detach() for z in logits]
    total = 0.0
    for i, net in enumerate(nets):
        peers = [z for j, z in enumerate(current) if j != i]
        with autocast(amp, images.device):
            loss = objective.member_loss(logits[i], peers, targets) / batch_size
        optimizer.zero_grad(set_to_none=True)  # only network i will hold gradients
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total = total + loss.detach()
        if i + 1 < len(nets):
            current[i] = fresh_logits(net, images, amp)
    return unwrap(model).combine([z.detach() for z in logits]), total * batch_size


class DML(CohortMethod):
    name, title, arch = 'dml', 'DML', 'resnet'
    usage = """\
Train m networks by deep mutual learning (DML): each also mimics the others' predictions.

    python cifar_dml.py -a resnet --dataset cifar100 --depth 32 --num-nets 2 \\
        --checkpoint checkpoints/cifar100/DML-32
Defaults are the paper's (Nesterov, batch 64, 200 epochs, LR / 10 every 60 epochs, networks
updated in turn); --update simultaneous takes one step over all networks' losses."""
    ensemble_label = 'ensemble (mean probability)'
    ensemble = 'mean_probability'
    flag_labels = {'num_nets': 'm', 'temperature': 'T'}
    train_step = staticmethod(mutual_train_step)

    def add_flags(self, parser):
        super().add_flags(parser)
        parser.add_argument('--temperature', type=float, default=1.0,
                            help='T of the mimicry term (the paper: none, i.e. 1)')
        parser.add_argument('--update', default='alternating', choices=UPDATES,
                            help="alternating: the paper's Algorithm 1 (networks in turn, "
                                 "predictions recomputed; no torchrun, no compile); "
                                 "simultaneous: one step over the summed losses")
        # The paper's CIFAR-100 settings (its implementation details); weight decay from Wide
        # ResNet, whose settings it says it follows (the paper states none).
        parser.set_defaults(nesterov=True, weight_decay=5e-4, train_batch=64, epochs=200,
                            schedule=[60, 120, 180])

    def check_flags(self, args):
        check_temperature(args)
        if args.update == 'alternating':
            if world_from_env().distributed:
                raise UserError('--update alternating steps one network at a time, which '
                                'DistributedDataParallel cannot do; under torchrun use '
                                '--update simultaneous')
            if args.compile:
                raise UserError('--compile: the alternating order runs the networks one by '
                                'one, eagerly; drop --compile or use --update simultaneous')

    def packable(self, args):
        if args.update == 'alternating':
            return ('--update alternating steps one network at a time, which a pack cannot '
                    'batch: use --update simultaneous')
        return None

    def variant(self, args):
        return {'update': args.update, 'temperature': args.temperature}

    def objective(self, args):
        return DMLLoss(temperature=args.temperature, update=args.update)

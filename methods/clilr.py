"""CL-ILR: collaborative learning with intermediate-level representation sharing.

Song and Chai, "Collaborative Learning for Deep Neural Networks", NeurIPS 2018, arXiv 1805.11761.

H heads (here: branches) share the lower layers. Per mini-batch of B images, with head logits
z_1..z_H, the objective as implemented (the paper's Eq. for L^(h), summed over the heads):

    L = sum_h [ beta CE(y, z_h) + (1 - beta) w(epoch) J_soft(q_h, z_h) ]
    J_soft(q, z) = - sum_k q_k log softmax(z / T)_k          (a cross-entropy, no T^2)
    q_h = softmax( (1 / (H - 1)) sum_{j != h} z_j / T ),     a constant (stop-gradient)

with every term averaged over the batch and w = 1 (the paper has no ramp-up; --consistency_rampup
R > 0 adds ONE's sigmoid ramp-up). Defaults T = 2, beta = 0.5 and H = 4 heads are those of
the public reimplementation qq456cvb/Collaborative-Learning; the paper's own settings table,
and whether it scales J_soft by T^2, could not be checked from here (qq456cvb does not).
Backpropagation rescaling (the paper's I(x) = x with gradient 1/H between the shared and the
per-head layers): the shared layers receive (1/H) sum_h dL^(h)/dx, each head's own layers
their usual gradient (--no-rescaling: off).

ILR sharing: the paper also shares layers hierarchically (a tree of splits, each split with
its own rescaling; qq456cvb builds 4 heads as a 2 x 2 tree of DenseNet blocks). Here the H
heads split once, at the ONE branch point (stem + stages 1-2 shared, each head owns stage 3
and a classifier): the paper's simple ILR sharing, and the layout ONE and OKDDip compare
against. Each head alone is a plain ResNet of the same depth; the paper deploys one head.
Over another backbone (-a resnext, densenet, wrn, vgg, okddip_vgg, okddip_densenet) the heads own
its last stage (the OKDDip code's DenseNet: one dense block shared by every head, as that code).
'ens' (the mean of the heads' logits) is logged beside them, as DefangChen/OKDDip's CL-ILR
does; the CL paper reports single heads.

Where popular reimplementations differ:
  - DefangChen/OKDDip (train_one.py --avg --bpscale): L = sum_h CE(z_h, y) + w(epoch) sum_h
    T^2 KL(q_h || softmax(z_h / T)), T = 3, ramp-up over 80 epochs, q_h NOT detached, no beta.
    `--form okddip` gives that objective (pass --temperature 3 --consistency_rampup 80 for
    its values).
  - qq456cvb/Collaborative-Learning (main.py; TensorFlow, DenseNet-40-12 on CIFAR-10): the same
    loss, T = 2, beta = 0.5, no T^2, q_h under tf.stop_gradient (only an early README said the
    gradient passes through q), 4 heads as a 2 x 2 tree; batch 64, weight decay 1e-4, momentum
    0.9, LR 0.1 divided by 10 after epochs 150, 225 and 290 (we stop at 150/225, batch 128).
See docs/FIDELITY.md (CL-ILR) for every difference.
"""
import torch.nn.functional as F

from models.clilr import CLILRHeads, CLILRResNet
from models.output import as_output
from utils.schedule import rampup_weight
from .base import BranchedMethod, check_rampup, check_temperature, require
from .networks import build_branched

FORMS = ('paper', 'okddip')


def peer_mean(logits):
    """(H, B, C) -> (H, B, C): for each head h the mean of the other heads' logits."""
    return (logits.sum(0, keepdim=True) - logits) / (len(logits) - 1)


class CLILRLoss:
    """sum_h [beta CE(y, z_h) + (1 - beta) w J_soft(q_h, z_h)] (paper), or with --form okddip
    sum_h [CE(y, z_h) + w T^2 KL(q_h || p_h)] with q_h not detached; summed over the batch and
    divided by batch_size."""

    def __init__(self, *, temperature, beta, rampup_epochs, form):
        self.temperature, self.beta, self.rampup_epochs, self.form = (
            temperature, beta, rampup_epochs, form)

    def rampup(self, epoch):
        return rampup_weight(epoch, self.rampup_epochs)

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        logits = as_output(output).members
        T, H = self.temperature, len(logits)
        w = self.rampup(epoch) if weight is None else weight
        hard = F.cross_entropy(logits.flatten(0, 1), targets.repeat(H), reduction='sum')
        soft_target = peer_mean(logits) / T
        log_p = F.log_softmax(logits / T, dim=-1)
        if self.form == 'paper':
            q = F.softmax(soft_target.detach(), dim=-1)
            soft = -(q * log_p).sum()
            loss = self.beta * hard + w * ((1 - self.beta) * soft)
        else:
            log_q = F.log_softmax(soft_target, dim=-1)
            soft = (log_q.exp() * (log_q - log_p)).sum() * T * T
            loss = hard + w * soft
        return loss / (batch_size or len(targets))


class CLILR(BranchedMethod):
    name, title, arch = 'clilr', 'CL-ILR', 'clilr_resnet'
    usage = """\
Train CL-ILR (Song & Chai, NeurIPS 2018): heads on a shared trunk learn from each other.

    python cifar_clilr.py --dataset cifar100 --depth 32 --checkpoint checkpoints/cifar100/CL-ILR-32
Defaults: 4 heads, T = 2, beta = 0.5 (qq456cvb's reimplementation; the paper's own values are
unchecked), backpropagation rescaling, LR / 10 at epochs 150 and 225. Ablation: --no-rescaling.
DefangChen/OKDDip's version: --form okddip --temperature 3 --consistency_rampup 80.
See docs/FIDELITY.md (CL-ILR)."""
    member, members, ensemble_label = 'head', 'heads', 'ensemble (mean of heads)'
    min_branches, why_min_branches = 2, ' (each head learns from the others)'
    flag_labels = {'num_branches': 'H', 'temperature': 'T', 'consistency_rampup': 'R'}

    def add_flags(self, parser):
        parser.add_argument('--num-branches', type=int, default=4,
                            help='H, the number of heads (4 as qq456cvb and DefangChen/OKDDip)')
        parser.add_argument('--temperature', type=float, default=2.0, help='T of the soft target')
        parser.add_argument('--beta', type=float, default=0.5,
                            help='weight of the hard-label term; the soft term gets 1 - beta')
        parser.add_argument('--consistency_rampup', '--consistency-rampup', type=float,
                            default=0, dest='consistency_rampup',
                            help='epochs of a sigmoid ramp-up of the soft term (paper: none)')
        parser.add_argument('--no-rescaling', action='store_true',
                            help='ablation: no backpropagation rescaling of the shared layers')
        parser.add_argument('--form', default='paper', choices=FORMS,
                            help="'okddip': DefangChen/OKDDip's CL-ILR objective (CE + w T^2 KL, "
                                 'no stop-gradient, no beta)')
        # 150/225 as DefangChen/OKDDip's CL-ILR (qq456cvb's code adds a drop at 290; ONE's
        # scripts use 151/225).
        parser.set_defaults(schedule=[150, 225])

    def check_flags(self, args):
        check_temperature(args)
        require(0 < args.beta <= 1, '--beta', args.beta, 'in (0, 1]')
        check_rampup(args)

    def variant(self, args):
        return {'rescaling': not args.no_rescaling, 'form': args.form}

    def build_model(self, args, num_classes):
        if self.own_layout(args):
            return CLILRResNet(args.depth, num_classes, args.num_branches,
                               rescale=not args.no_rescaling, depth_rule=args.depth_rule)
        model = build_branched(args, num_classes, 'average', CLILRHeads)
        model.rescale = not args.no_rescaling
        return model

    def objective(self, args):
        return CLILRLoss(temperature=args.temperature, beta=args.beta,
                         rampup_epochs=args.consistency_rampup, form=args.form)

"""OKDDip: online knowledge distillation with diverse peers.

Chen, Mei, Wang, Feng, Chen, "Online Knowledge Distillation with Diverse Peers", AAAI 2020,
arXiv 1912.00350.

m branches on a shared trunk (the ONE layout: stem + stages 1-2 shared, each branch owns
stage 3 and a classifier): branch 1 is the group leader, branches 2..m are the m - 1
auxiliary peers. Per mini-batch, with logits z, softened predictions q'_a = softmax(z_a / T)
and the peers' pooled stage-3 features h_a:

    alpha_ab = softmax_b( L(h_a)^T E(h_b) ),  L(h) = W_L^T h, E(h) = W_E^T h   (a, b peers)
    t_a = sum_b alpha_ab q'_b               the target of peer a (b = a included)
    t_m = (1 / (m - 1)) sum_b q'_b          the leader's target: the peers' mean prediction
    L = sum_{all m} CE(z, y) + alpha w(epoch) T^2 [ sum_a KL(t_a || q'_a) + KL(t_m || q'_leader) ]

T = 3, alpha = 1, w(epoch) = exp(-5 (1 - epoch / R)^2) up to R = 80 epochs (as ONE), every
term averaged over the batch. W_L, W_E: bias-free Linear(C, C / 8) shared by all peers (C =
64 for BasicBlock nets, 256 for Bottleneck), no 1/sqrt(d) scaling. Nothing is detached: the
first-level KL trains the attention projections (its only source of gradient) and sends
gradient into the peers through t_a, and the leader's KL sends gradient into the peers
through t_m (as the authors' code; the paper's text, as far as it could be read here, names
no stop-gradient).

The model (models/okddip.py) returns ModelOutput(members = logits (m, B, classes) with the
leader first, ensemble = the mean of the peers' logits (B, classes), extras = {'log_attention':
log alpha (B, m - 1, m - 1)}); the log keeps log t_a = logsumexp_b(log alpha_ab + log q'_b)
finite. The leader is what OKDDip deploys; 'ens' is the peers' ensemble (the authors' code
reports the mean of the peers' logits).

Where the authors' code (DefangChen/OKDDip, train_GL.py + models/model_cifar/resnet_GL.py)
differs from the paper: it aggregates logits, t_a = softmax(sum_b alpha_ab z_b / T) and t_m =
softmax(mean_b z_b / T) (`--aggregate logits` reproduces that), adds 1e-7 to the target
probabilities before the KL (not done here), and puts the leader last. Its defaults, which
set_defaults below copies: 4 branches, weight decay 5e-4, Nesterov momentum, LR / 10 at
epochs 150 and 225. The published 25.65 +- 0.15 (CIFAR-100, ResNet-32) came from that code,
i.e. logit targets and the leader: methods/published.py keys it to --aggregate logits. Its
ResNet-110 is a Bottleneck net of 12 blocks per stage (9n + 2 layers), ours ONE's 18 unless
--depth-rule 9n+2; see docs/FIDELITY.md (OKDDip). Over another backbone (-a resnext, densenet,
wrn, vgg, okddip_vgg) the branches own its last stage and the attention reads their pooled
features; over the OKDDip code's DenseNet (-a okddip_densenet) the branches share one dense
block, the attention and the leader's target run over every branch, and the leader pools
without the final BatchNorm, as that code (models/okddip.py, docs/FIDELITY.md).
"""
import math

import torch
import torch.nn.functional as F

from models.okddip import OKDDipBranches, OKDDipResNet
from utils.losses import branch_cross_entropy
from utils.schedule import rampup_weight
from .base import BranchedMethod, check_rampup, check_temperature, require
from .networks import build_branched, plain_network_of

AGGREGATES = ('probabilities', 'logits')


def kl_sum(log_target, log_student):
    """sum over everything of KL(target || student), both given as log-probabilities."""
    return (log_target.exp() * (log_target - log_student)).sum()


class OKDDipLoss:
    """sum CE + alpha w T^2 [sum_a KL(t_a || q'_a) + KL(t_m || q'_leader)], summed over the
    batch and divided by batch_size; see the module docstring."""

    def __init__(self, *, temperature, rampup_epochs, alpha, aggregate):
        self.temperature, self.rampup_epochs, self.alpha, self.aggregate = (
            temperature, rampup_epochs, alpha, aggregate)

    def rampup(self, epoch):
        """The weight of the distillation terms: alpha * w(epoch)."""
        return self.alpha * rampup_weight(epoch, self.rampup_epochs)

    def targets(self, values, log_attention):
        """log t_a (n, B, C) and log t_m (B, C) from the attended logits (n', B, C): the
        peers' (n' = n = m - 1), or the OKDDip code DenseNet's n' = m (its model's
        'attention_values'), and log alpha (B, n, n')."""
        T = self.temperature
        if self.aggregate == 'logits':
            mixed = torch.einsum('bij,jbc->ibc', log_attention.exp(), values)
            return F.log_softmax(mixed / T, dim=-1), F.log_softmax(values.mean(0) / T, dim=-1)
        log_q = F.log_softmax(values / T, dim=-1).transpose(0, 1)            # (B, n', C)
        log_t = torch.logsumexp(log_attention.unsqueeze(-1) + log_q.unsqueeze(1), dim=2)
        log_leader = torch.logsumexp(log_q, dim=1) - math.log(len(values))
        return log_t.transpose(0, 1), log_leader

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        logits, log_attention = output.members, output.extra('log_attention')
        T = self.temperature
        leader, peers = logits[0], logits[1:]
        values = (output.extras or {}).get('attention_values', peers)
        log_t, log_t_leader = self.targets(values, log_attention)
        distill = (kl_sum(log_t, F.log_softmax(peers / T, dim=-1))
                   + kl_sum(log_t_leader, F.log_softmax(leader / T, dim=-1))) * T * T
        w = self.rampup(epoch) if weight is None else weight
        loss = branch_cross_entropy(logits, targets) + w * distill
        return loss / (batch_size or len(targets))


class OKDDip(BranchedMethod):
    name, title, arch = 'okddip', 'OKDDip', 'okddip_resnet'
    usage = """\
Train OKDDip (Chen et al., AAAI 2020): attention-weighted peers teach each other and a leader.

    python cifar_okddip.py --dataset cifar100 --depth 32 --checkpoint checkpoints/cifar100/OKDDip-32
The authors' settings are the defaults: 4 branches (leader = branch 1), T = 3, alpha = 1,
ramp-up 80 epochs, weight decay 5e-4, Nesterov momentum, LR / 10 at epochs 150 and 225.
The authors' code's logit aggregation, which produced the published 25.65: --aggregate logits."""
    member, members, ensemble_label = 'branch', 'branches', 'peer ensemble'
    min_branches, why_min_branches = 2, ' (a leader and a peer)'
    flag_labels = {'num_branches': 'm', 'temperature': 'T', 'consistency_rampup': 'R'}

    def add_flags(self, parser):
        parser.add_argument('--num-branches', type=int, default=4,
                            help='m: the group leader (branch 1) and m - 1 auxiliary peers')
        parser.add_argument('--temperature', type=float, default=3.0, help='distillation T')
        parser.add_argument('--alpha', type=float, default=1.0,
                            help='weight of the two distillation terms')
        parser.add_argument('--consistency_rampup', '--consistency-rampup', type=float,
                            default=80, dest='consistency_rampup',
                            help='epochs of the sigmoid ramp-up of the distillation weight')
        parser.add_argument('--aggregate', default='probabilities', choices=AGGREGATES,
                            help="what the targets average: the peers' softened predictions "
                                 "(paper) or their logits (the authors' code)")
        # The authors' code's settings (its README and train_GL.py).
        parser.set_defaults(weight_decay=5e-4, nesterov=True, schedule=[150, 225])

    def check_flags(self, args):
        check_temperature(args)
        require(args.alpha >= 0, '--alpha', args.alpha, '>= 0')
        check_rampup(args)

    def variant(self, args):
        return {'aggregate': args.aggregate}

    def build_model(self, args, num_classes):
        if self.own_layout(args):
            return OKDDipResNet(args.depth, num_classes, args.num_branches, args.depth_rule)
        return build_branched(args, num_classes, 'average', OKDDipBranches)

    def objective(self, args):
        return OKDDipLoss(temperature=args.temperature, rampup_epochs=args.consistency_rampup,
                          alpha=args.alpha, aggregate=args.aggregate)

    def label(self, column):
        if column == '1':
            return 'leader (branch 1)'
        return f'peer (branch {column})' if column.isdigit() else super().label(column)

    def deployable(self, state, member):
        """Branch K (1: the leader) as a plain network, without the attention projections
        (and, for the OKDDip code's DenseNet leader, without the final BatchNorm it skips)."""
        plain = super().deployable(state, member)
        keys = plain_network_of(state, 1, meta=True,
                                **self.deployed_keywords(state, member)).state_dict().keys()
        return {k: v for k, v in plain.items() if k in keys}

    def deployed_keywords(self, state, member):
        leader = getattr(plain_network_of(state, 1, meta=True), 'okddip_leader', {})
        return dict(leader) if member == 1 else {}

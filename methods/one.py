"""ONE (Lan, Zhu, Gong, NeurIPS 2018, arXiv 1806.04606) and its ablations.

Objective, per mini-batch of B images, with branch logits z_1..z_m and the gated ensemble
z_e = sum_i g_i z_i:

    L = sum_i CE(z_i, y) + CE(z_e, y) + w(epoch) * sum_i T^2 KL(p_e || p_i),
    p = softmax(z / T), T = 3, w(epoch) = exp(-5 (1 - epoch / R)^2) up to R = 80 epochs.

The KL is summed over classes and averaged over the batch; p_e is detached, so the
distillation term sends no gradient into the gate or, through z_e, into the branches
(the original code does the same). The ablations of the paper's Table 5:
  --no-distill           without online distillation: the KL term is dropped
  --gate average         without the gate: z_e is the plain mean of the branch logits
  --branch-point stage1  without sharing layers: the branches start right after the stem

-a one_resnet (the default) is the seed's network; over any other backbone (-a resnext,
densenet, wrn, vgg, and the OKDDip code's okddip_vgg and okddip_densenet, whose branches share
one dense block as that code's) the same layout is models/branched.py's: branches from
--branch-point (default: the last stage) and the gate on the trunk's output.
"""
import torch.nn.functional as F

from models import one_resnet
from models.branched import GATES
from models.output import as_output
from utils.losses import branch_cross_entropy, distillation_kl
from utils.schedule import rampup_weight
from .base import BranchedMethod, check_rampup, check_temperature
from .networks import build_branched, check_branch_point


class ONELoss:
    """sum_i CE(z_i) + CE(z_e) + w(epoch) * sum_i T^2 KL(p_e || p_i), batch-averaged."""

    def __init__(self, *, temperature, rampup_epochs, distill):
        self.temperature, self.rampup_epochs, self.distill = temperature, rampup_epochs, distill

    def rampup(self, epoch):
        return rampup_weight(epoch, self.rampup_epochs) if self.distill else 0.0

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        logits, ensemble, _ = as_output(output)
        loss = branch_cross_entropy(logits, targets) + F.cross_entropy(ensemble, targets,
                                                                       reduction='sum')
        if self.distill:
            w = self.rampup(epoch) if weight is None else weight
            loss = loss + w * distillation_kl(logits, ensemble, self.temperature)
        return loss / (batch_size or len(targets))


class ONE(BranchedMethod):
    name, title, arch = 'one', 'ONE', 'one_resnet'
    usage = """\
Train ONE (On-the-fly Native Ensemble) on CIFAR: m branches distilled from their gated ensemble.

    python cifar_one.py -a one_resnet --dataset cifar100 --depth 32 --epochs 300 \\
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/ONE-32
Ablations of the paper: --no-distill, --gate average, --branch-point stage1, --num-branches M."""
    member, members, ensemble_label = 'branch', 'branches', 'ensemble (ONE-E)'
    flag_labels = {'num_branches': 'm', 'temperature': 'T', 'consistency_rampup': 'R',
                   'no_distill': 'no distill'}

    def add_flags(self, parser):
        parser.add_argument('--num-branches', type=int, default=3, help='m, the number of branches')
        parser.add_argument('--temperature', type=float, default=3.0, help='distillation T')
        parser.add_argument('--consistency_rampup', '--consistency-rampup', type=float, default=80,
                            dest='consistency_rampup', help='epochs of the sigmoid ramp-up')
        parser.add_argument('--no-distill', action='store_true',
                            help='ablation: no online distillation (drop the KL term)')
        parser.add_argument('--gate', default='learned', choices=GATES,
                            help="ablation 'average': the teacher is the plain branch average")
        parser.add_argument('--branch-point', default=None, metavar='stageK',
                            help="the first stage each branch owns (default: the last, stage3 "
                                 "but stage5 for VGG); ablation 'stage1': branches share only "
                                 'the stem')

    def resolve(self, args):
        super().resolve(args)
        check_branch_point(args)

    def check_flags(self, args):
        check_temperature(args)
        check_rampup(args)

    def variant(self, args):
        return {'distill': not args.no_distill, 'gate': args.gate,
                'branch_point': args.branch_point}

    def build_model(self, args, num_classes):
        if self.own_layout(args):
            return one_resnet(args.depth, num_classes, args.num_branches, args.branch_point,
                              args.gate, args.depth_rule)
        return build_branched(args, num_classes, args.gate)

    def objective(self, args):
        return ONELoss(temperature=args.temperature, rampup_epochs=args.consistency_rampup,
                       distill=not args.no_distill)

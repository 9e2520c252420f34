"""KDCL: online knowledge distillation via collaborative learning (Guo, Wang, Wu, Yu, Liang, Hu,
Luo, CVPR 2020, arXiv 2004.03855).

m independent networks (students) train together. On every mini-batch an ensemble rule makes
one soft target z_t from their logits z_1..z_m, and every student learns from the labels and
from that target (the paper's Eqs. 1-2):

    L = sum_i [ CE(z_i, y) + lambda T^2 KL(softmax(z_t / T) || softmax(z_i / T)) ],

summed over the students, each term summed over the batch and divided by B (the KL over
classes), z_t detached: a constant target, which sends no gradient into the students through
it (the paper does not say; its teacher is an ensemble built from the students' predictions,
as KD's teacher, and the common reimplementation detaches it too).

The ensemble rules (--rule), applied per sample as the paper writes them:
  naive     z_t = z_k, k = argmin_i CE(z_i, y): the student with the lowest cross-entropy on the
            sample (Eq. 4)
  minlogit  z_t,j = min_i (z_i,j - z_i,c), c the true class: every student's logits shifted so
            the true class's is 0 (which leaves its softmax unchanged), then the smallest
            value of each class over the students (Eqs. 6-7)
  mean      z_t = mean_i z_i: not a rule of the paper, but what shaoeric's public
            reimplementation (Online-Knowledge-Distillation-via-Collaborative-Learning) does
Not here: KDCL-Linear (Eq. 5: a convex combination of the logits minimising CE; the paper gives
neither its solver nor whether it is solved per sample or per batch) and KDCL-General (Eqs.
8-11: weights from the students' errors on 5,000 training images held out of training, updated
every epoch), which needs data outside the training batch.

Input distortion (the paper's "invariant collaborative learning", ICL; --icl, the default):
each student sees its own random crop and flip of the same images (utils/data.py's views),
and the target ensembles their predictions on those different views. --no-icl: one view for
all. Evaluation gives every student the same test image.

Defaults: the paper's CIFAR-100 settings (Sec. 4.2): 2 students, T = 2, lambda = 1, 200 epochs,
LR 0.1 divided by 10 at epochs 100 and 150, weight decay 5e-4, batch 128, momentum 0.9 (no
Nesterov named). The paper trains two DIFFERENT students (ResNet-32 with WRN-16-2); here the m
students are independently initialised copies of -a's network, so its published CIFAR rows
(Table 7) are not keyed to our runs (docs/FIDELITY.md lists them). Columns: student 1..m and
'ens', the mean of their logits (a label-free ensemble; naive and minlogit need the label).
"""
import argparse

import torch
import torch.nn.functional as F

from models.cohort import mean_logits
from models.output import as_output
from utils.errors import UserError
from utils.imagefolder import IMAGENET
from utils.losses import branch_cross_entropy, distillation_kl
from .base import CohortMethod, check_temperature, require

RULES = ('naive', 'minlogit', 'mean')


def naive_target(logits, targets):
    """(m, B, C) -> (B, C): per sample, the logits of the student with the lowest CE."""
    losses = torch.stack([F.cross_entropy(z, targets, reduction='none') for z in logits])
    best = losses.argmin(0)                                                  # (B,)
    return logits[best, torch.arange(logits.shape[1], device=logits.device)]


def minlogit_target(logits, targets):
    """(m, B, C) -> (B, C): min over students of z_i - z_i[true class]."""
    true = logits.gather(2, targets.view(1, -1, 1).expand(len(logits), -1, 1))
    return (logits - true).min(0).values


TARGETS = {'naive': naive_target, 'minlogit': minlogit_target,
           'mean': lambda logits, targets: mean_logits(logits)}


class KDCLLoss:
    """sum_i [CE(z_i, y) + lambda T^2 KL(p_t || p_i)], z_t = rule(z, y) detached, summed over
    the batch and divided by batch_size."""

    def __init__(self, *, temperature, weight, rule):
        self.temperature, self.weight, self.rule = temperature, weight, rule

    def rampup(self, epoch):
        """The weight of the distillation term (constant lambda), logged as w."""
        return self.weight

    def teacher(self, logits, targets):
        return TARGETS[self.rule](logits.detach(), targets)

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        logits = as_output(output).members
        teacher = self.teacher(logits, targets)
        soft = distillation_kl(logits, teacher, self.temperature)
        loss = branch_cross_entropy(logits, targets) + self.weight * soft
        return loss / (batch_size or len(targets))


class KDCL(CohortMethod):
    name, title, arch = 'kdcl', 'KDCL', 'resnet'
    usage = """\
Train KDCL (Guo et al., CVPR 2020): m networks learn from an ensemble of their own predictions.

    python cifar_kdcl.py -a resnet --dataset cifar100 --depth 32 --rule naive \\
        --checkpoint checkpoints/cifar100/KDCL-32
Defaults are the paper's CIFAR-100 settings: 2 networks, T = 2, lambda = 1, each network on its
own crop and flip of the images (--no-icl: the same), 200 epochs, LR / 10 at epochs 100 and 150,
weight decay 5e-4. Rules: naive (the lowest-loss network, per sample), minlogit, mean."""
    member, members = 'student', 'students'
    ensemble_label = 'ensemble (mean logits)'
    ensemble = 'mean_logits'
    flag_labels = {'num_nets': 'm', 'temperature': 'T', 'weight': 'lambda'}

    def add_flags(self, parser):
        super().add_flags(parser)
        parser.add_argument('--rule', default='naive', choices=RULES,
                            help="the ensemble rule that makes the soft target (mean: shaoeric's "
                                 'reimplementation, not the paper)')
        parser.add_argument('--temperature', type=float, default=2.0, help='distillation T')
        parser.add_argument('--weight', '--lambda', type=float, default=1.0, dest='weight',
                            help='lambda, the weight of the distillation term')
        parser.add_argument('--icl', action=argparse.BooleanOptionalAction, default=True,
                            help='each network sees its own random crop and flip of the images '
                                 "(the paper's invariant collaborative learning; off on ImageNet, "
                                 'whose loader gives one)')
        parser.set_defaults(weight_decay=5e-4, epochs=200, schedule=[100, 150])
        parser.dataset_defaults[IMAGENET]['icl'] = False   # its folder loader gives one view

    def check_flags(self, args):
        check_temperature(args)
        require(args.weight >= 0, '--weight', args.weight, '>= 0')
        if args.icl and args.dataset == IMAGENET:
            raise UserError("--icl: ImageNet's loader gives each image one crop; drop --icl")

    def variant(self, args):
        return {'rule': args.rule, 'temperature': args.temperature, 'weight': args.weight,
                'icl': args.icl}

    def views(self, args):
        return args.num_nets if args.icl else 1

    def objective(self, args):
        return KDCLLoss(temperature=args.temperature, weight=args.weight, rule=args.rule)

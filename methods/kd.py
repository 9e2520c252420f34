"""KD: knowledge distillation from a frozen teacher (Hinton, Vinyals, Dean 2015, arXiv 1503.02531).

Objective, per mini-batch of B images, with student logits z_s and teacher logits z_t:

    L = (1 - alpha) CE(z_s, y) + alpha T^2 KL(softmax(z_t / T) || softmax(z_s / T)),

both terms summed over the batch and divided by B (the KL is summed over classes). z_t is
computed without gradient from a teacher that stays in eval mode (its BatchNorm uses its
running statistics and never updates them, even while the engine trains the student).
Hinton et al. write the soft term as the cross-entropy with the teacher's soft targets; it
differs from the KL by the teacher's entropy, a constant, so the gradients are the same (the
logged loss is lower by that constant). T^2 keeps the soft term's gradient scale independent of
T, as the paper prescribes. The paper has no CIFAR setting: T = 4 and alpha = 0.9 are the common
CIFAR choice (RepDistiller's KD command, `-r 0.1 -a 0.9` with its default T = 4) and follow the
paper's advice to put a much lower weight on the hard-label term. The training schedule is the
harness's (ONE's) so that a KD student compares directly with the baseline and ONE.

Where popular reimplementations differ: OKDDip's train_kd uses CE + alpha T^2 KL with T = 3 and
alpha = 1 (no 1 - alpha on the label term) and adds 1e-7 to the teacher's probabilities;
RepDistiller weights the two terms separately (-r, -a); some leave the teacher in train mode,
so its BatchNorm uses batch statistics and its running statistics drift.

The teacher is a checkpoint of this repository (--teacher PATH): a baseline network, an
exported branch, or any method's checkpoint, as its ensemble (`--teacher-member ens`, the
default where the method has one, e.g. ONE-E) or one member (`--teacher-member K`: ONE's branch
K, DML's network K), which is rebuilt as the plain network export_branch.py would write. Its
identity (path, method, arch, depth, dataset, classes, member, epoch) is part of the run's
variant: recorded in args.json and every checkpoint and checked on resume and evaluation. The
student's checkpoints also hold the teacher's weights (the model's state_dict includes them), so
resume and -e use exactly the weights the run started with; --teacher must still point to the
same checkpoint, which is re-read to rebuild the teacher's architecture.
"""
import os
from argparse import Namespace

import torch.nn.functional as F

from models.student_teacher import EnsembleOf, StudentTeacher
from utils.checkpoint import load_checkpoint
from utils.errors import UserError
from utils.losses import distillation_kl
from .base import Method, check_temperature, require
from .networks import build_plain, network_name, plain_network_of

# What the run records of its teacher (args.json keys and variant entries).
TEACHER_KEYS = ('teacher', 'teacher_member', 'teacher_method', 'teacher_arch', 'teacher_depth',
                'teacher_dataset', 'teacher_num_classes', 'teacher_epoch')


class KDLoss:
    """(1 - alpha) CE(z_s, y) + alpha T^2 KL(p_t || p_s), p = softmax(z / T), batch-averaged."""

    def __init__(self, *, temperature, alpha):
        self.temperature, self.alpha = temperature, alpha

    def rampup(self, epoch):
        """The weight of the distillation term (constant), logged as w."""
        return self.alpha

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        """output: ModelOutput(members=student logits (1, B, C), extras={'teacher': (B, C)})."""
        student, teacher = output.members[0], output.extra('teacher')
        loss = ((1 - self.alpha) * F.cross_entropy(student, targets, reduction='sum')
                + self.alpha * distillation_kl(student, teacher, self.temperature))
        return loss / (batch_size or len(targets))


def load_teacher(path):
    """The teacher checkpoint and the method that wrote it (its records upgraded)."""
    from . import METHODS  # methods/__init__.py imports this module
    state = load_checkpoint(path)
    method = METHODS.get(state.get('method'))
    if method is None:
        raise UserError(f'--teacher {path}: saved by an unknown method {state.get("method")!r}')
    return method.upgrade_checkpoint(state), method


def describe_teacher(teacher):
    """A KD run's record of its teacher ({'method': 'one', 'member': 'ens', ...}) as a label."""
    from . import METHODS  # methods/__init__.py imports this module
    method, member = METHODS.get(teacher.get('method')), str(teacher.get('member'))
    text = 'teacher ' + (method.title if method else str(teacher.get('method')))
    text += '-E' if member == 'ens' else ''
    if 'arch' in teacher:
        text += f' {network_name(teacher["arch"], teacher.get("depth"))}'
    if member not in ('1', 'ens', 'None'):
        text += f' {method.label(member) if method else member}'
    return text + (f' at epoch {teacher["epoch"]}' if 'epoch' in teacher else '')


def has_ensemble(state, method):
    return 'args' in state and 'ens' in method.columns(Namespace(**state['args']))


def resolve_member(state, method, member, path):
    """'ens' or a 1-based member number as a string, checked against the teacher checkpoint."""
    count = method.member_count(state)
    ensemble = has_ensemble(state, method)
    if member is None:
        return 'ens' if ensemble else '1'
    if member == 'ens':
        if not ensemble:
            raise UserError(f'--teacher-member ens: {path} ({method.title}) has no ensemble; '
                            f'use a member 1..{count}')
        return member
    if not (member.isdigit() and 1 <= int(member) <= count):
        raise UserError(f'--teacher-member must be ens or 1..{count} for {path}, got {member!r}')
    return str(int(member))


def build_teacher(state, method, member, num_classes):
    """The frozen teacher network a checkpoint's member (or ensemble) makes."""
    if state.get('num_classes') != num_classes:
        raise UserError(f'the teacher has {state.get("num_classes")} classes, the data '
                        f'{num_classes}')
    if member == 'ens':
        teacher = EnsembleOf(method.build_model(Namespace(**state['args']), num_classes))
        teacher.model.load_state_dict(state['state_dict'])
    else:
        teacher = plain_network_of(state, num_classes,
                                   **method.deployed_keywords(state, int(member)))
        teacher.load_state_dict(method.deployable(state, int(member)))
    return teacher.requires_grad_(False).eval()


class KD(Method):
    name, title, arch = 'kd', 'KD', 'resnet'
    usage = """\
Train a CIFAR ResNet student by knowledge distillation (KD) from a frozen teacher checkpoint.

    python cifar_kd.py -a resnet --dataset cifar100 --depth 32 --teacher \\
        checkpoints/cifar100/baseline-110/model_best.pth.tar --checkpoint checkpoints/cifar100/KD-32
A ONE teacher distils its ensemble by default; --teacher-member K takes its branch K."""
    member, members, ensemble_label = 'student', 'student and teacher', 'ensemble'
    flag_labels = {'temperature': 'T'}

    def add_flags(self, parser):
        parser.add_argument('--teacher', metavar='PATH',  # required: checked in check_flags
                            help="a checkpoint of this repository to distil from (baseline, "
                                 "exported branch, ONE, DML, ...)")
        parser.add_argument('--teacher-member', default=None, metavar='ens|K',
                            help="the teacher's ensemble or its member K (default: the ensemble "
                                 "where the checkpoint has one, else its network 1)")
        parser.add_argument('--temperature', type=float, default=4.0,
                            help='T of the soft targets (common CIFAR choice; the paper has none)')
        parser.add_argument('--alpha', type=float, default=0.9,
                            help='weight of the distillation term; the label term gets 1 - alpha')

    def check_flags(self, args):
        check_temperature(args)
        require(0 <= args.alpha <= 1, '--alpha', args.alpha, 'in [0, 1]')
        if not args.teacher:
            raise UserError('--teacher PATH is required: the checkpoint to distil from')
        path = args.teacher
        state, method = load_teacher(path)
        if state.get('dataset') != args.dataset:
            raise UserError(f'--teacher {path} was trained on {state.get("dataset")}, but this run '
                            f'is on {args.dataset}: the teacher must share the student\'s dataset')
        args.teacher = os.path.abspath(path)
        args.teacher_member = resolve_member(state, method, args.teacher_member, path)
        args.teacher_method, args.teacher_arch = state['method'], state['arch']
        args.teacher_depth, args.teacher_dataset = state['depth'], state['dataset']
        args.teacher_num_classes, args.teacher_epoch = state['num_classes'], state['epoch']

    def variant(self, args):
        return {**{key: getattr(args, key, None) for key in TEACHER_KEYS},
                'temperature': args.temperature, 'alpha': args.alpha}

    def build_model(self, args, num_classes):
        # The student first: with the same seed it starts from the baseline's initial weights.
        student = build_plain(args, num_classes)
        teacher = build_teacher(*load_teacher(args.teacher), args.teacher_member, num_classes)
        return StudentTeacher(student, teacher)

    def objective(self, args):
        return KDLoss(temperature=args.temperature, alpha=args.alpha)

    def columns(self, args):
        return ['1', 'teacher']

    def describe_flags(self, flags):
        """The teacher_* flags as one label, e.g. 'teacher ONE-E ResNet-32 at epoch 300' or
        'teacher ONE ResNet-32 branch 2 at epoch 300'; the others as every method's."""
        prefix = 'teacher_'
        teacher = {k[len(prefix):]: v for k, v in flags if k.startswith(prefix)}
        rest = [(k, v) for k, v in flags if not k.startswith(prefix)]
        return ([describe_teacher(teacher)] if teacher else []) + super().describe_flags(rest)

    def label(self, column):
        return 'student' if column == '1' else column

    def deployable(self, state, member):
        if member != 1:
            raise UserError(f'a KD checkpoint deploys its student only; --branch must be 1, '
                            f'got {member}')
        prefix = 'student.'
        return {key[len(prefix):]: value for key, value in state['state_dict'].items()
                if key.startswith(prefix)}

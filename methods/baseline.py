"""The baseline: a plain network (the CIFAR ResNet by default) trained with cross-entropy alone."""
from utils.errors import UserError
from models.output import as_output
from utils.losses import branch_cross_entropy
from .base import Method
from .networks import build_plain


class CrossEntropy:
    """Cross-entropy of every member's logits (a plain ResNet has one)."""

    def rampup(self, epoch):
        return 0.0

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        """Loss summed over the batch and divided by `batch_size` (default: this batch's size,
        giving the mean; a distributed rank passes the global batch size)."""
        loss = branch_cross_entropy(as_output(output).members, targets)
        return loss / (batch_size or len(targets))


class Baseline(Method):
    name, title, arch = 'baseline', 'baseline', 'resnet'
    usage = """\
Train the baseline: a plain CIFAR ResNet with cross-entropy.

    python cifar_baseline.py -a resnet --dataset cifar100 --depth 32 --epochs 300 \\
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/baseline-32"""

    def build_model(self, args, num_classes):
        return build_plain(args, num_classes)

    def objective(self, args):
        return CrossEntropy()

    def deployable(self, state, member):
        if member != 1:
            raise UserError(f'a baseline checkpoint holds one network; --branch must be 1, got {member}')
        return state['state_dict']

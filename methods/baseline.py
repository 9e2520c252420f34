"""The baseline: a plain CIFAR ResNet trained with cross-entropy alone."""
from models import resnet
from utils.errors import UserError
from utils.losses import CrossEntropy
from .base import Method


class Baseline(Method):
    name, title, arch = 'baseline', 'baseline', 'resnet'

    def build_model(self, args, num_classes):
        return resnet(args.depth, num_classes)

    def objective(self, args):
        return CrossEntropy()

    def deployable(self, state, member):
        if member != 1:
            raise UserError(f'a baseline checkpoint holds one network; --branch must be 1, got {member}')
        return state['state_dict']

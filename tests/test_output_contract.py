"""The model output contract (models/output.py): a method adds what its objective needs as a
named extra and declares its accuracy columns; the engine trains it untouched. Shown here by a
feature-based method defined in this file alone and run through utils/engine.py."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import TINY, load
from methods.base import Method
from methods.networks import build_plain
from models.output import ModelOutput
from utils import engine

FEATURE_WEIGHT = 0.01


class WithFeatures(nn.Module):
    """A plain network whose output also carries its pooled features."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        features = self.net.features(x)
        return ModelOutput(self.net.fc(features).unsqueeze(0), extras={'features': features})


class FeaturePenalty:
    """CE + FEATURE_WEIGHT * mean squared pooled feature: an objective that reads an extra."""
    seen = []

    def rampup(self, epoch):
        return FEATURE_WEIGHT

    def __call__(self, output, targets, epoch, batch_size=None, weight=None):
        features = output.extra('features')
        self.seen.append(tuple(features.shape))
        loss = (F.cross_entropy(output.members[0], targets, reduction='sum')
                + FEATURE_WEIGHT * features.pow(2).mean(1).sum())
        return loss / (batch_size or len(targets))


class FeatureMethod(Method):
    name, title, arch = 'feature_penalty', 'feature penalty', 'resnet'
    usage = 'a feature-based method'

    def build_model(self, args, num_classes):
        return WithFeatures(build_plain(args, num_classes))

    def objective(self, args):
        return FeaturePenalty()


def test_a_feature_based_method_trains_through_the_engine_untouched(fashion_root, tmp_path):
    run = tmp_path / 'run'
    flags = [*TINY, '--data-dir', fashion_root, '-c', str(run), '--train-subset', '128',
             '--epochs', '2']
    assert engine.main(FeatureMethod(), flags) == 0
    state = load(run / 'checkpoint.pth.tar')
    assert state['method'] == 'feature_penalty' and state['epoch'] == 2
    assert 'net.fc.weight' in state['state_dict']
    # the objective saw the pooled features (64 channels of a CIFAR ResNet) of every batch
    assert FeaturePenalty.seen and all(shape[1:] == (64,) for shape in FeaturePenalty.seen)
    last = state['history'][-1]
    assert 0 <= last['test_acc_1'] <= 100 and last['train_loss'] > 0
    assert engine.main(FeatureMethod(), [*flags, '-e', '--resume',
                                         str(run / 'checkpoint.pth.tar')]) == 0

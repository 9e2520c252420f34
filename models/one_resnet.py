"""ONE: a CIFAR ResNet whose upper stages are replicated into m branches, plus a gate.

The paper's network shares the stem and stages 1-2 and gives each branch its own stage 3
(`branch_point='stage3'`: the first stage a branch owns). Its ablations change two things,
both options here: `branch_point='stage1'` makes the branches start right after the stem
("without sharing layers"; 'stage2' lies between), and `gate='average'` replaces the
learned gate by the plain mean of the branches ("without the gate").
"""
import torch.nn as nn

from .branched import GATES, GatedBranches, branch_state_dict
from .resnet import blocks_per_stage, init_weights, make_stage

__all__ = ['one_resnet', 'ONEResNet', 'branch_state_dict', 'BRANCH_POINTS', 'GATES', 'STAGES']

# The first stage each branch owns -> the stages (name, planes, stride) it owns.
STAGES = (('layer1', 16, 1), ('layer2', 32, 2), ('layer3', 64, 2))
BRANCH_POINTS = {'stage1': STAGES, 'stage2': STAGES[1:], 'stage3': STAGES[2:]}


class Branch(nn.Module):
    """One branch: its own copy of the unshared stages, the 8x8 average pool, a classifier.
    The stages keep the plain ResNet's names, so trunk + branch is a `resnet` state dict."""

    def __init__(self, block, inplanes, blocks, num_classes, stages=STAGES[2:]):
        super().__init__()
        self.stage_names = [name for name, _, _ in stages]
        channels = [inplanes]
        for name, planes, stride in stages:
            stage, out = make_stage(block, channels[-1], planes, blocks, stride)
            self.add_module(name, stage)
            channels.append(out)
        self.stage_channels = tuple(channels)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels[-1], num_classes)

    def features(self, x):
        """The pooled features before the classifier, shape (batch, channels)."""
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.features(x))


class ONEResNet(GatedBranches):
    """The seed's layout of GatedBranches: forward(x) returns ModelOutput(branch logits
    (num_branches, batch, num_classes), gated ensemble (batch, num_classes))."""
    stem_names = ('conv1', 'bn1', 'relu')

    def __init__(self, depth, num_classes=10, num_branches=3, branch_point='stage3',
                 gate='learned', depth_rule='6n+2'):
        super().__init__()
        if num_branches < 1:
            raise ValueError(f'num_branches must be >= 1, got {num_branches}')
        if branch_point not in BRANCH_POINTS or gate not in GATES:
            raise ValueError(f'branch_point must be one of {sorted(BRANCH_POINTS)} and gate one '
                             f'of {GATES}, got {branch_point!r}, {gate!r}')
        n, block = blocks_per_stage(depth, depth_rule)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        channels, owned = 16, BRANCH_POINTS[branch_point]
        self.shared_stages = [name for name, _, _ in STAGES[:len(STAGES) - len(owned)]]
        for name, planes, stride in STAGES[:len(STAGES) - len(owned)]:
            stage, channels = make_stage(block, channels, planes, n, stride)
            self.add_module(name, stage)
        self.branches = nn.ModuleList(
            Branch(block, channels, n, num_classes, owned)
            for _ in range(num_branches))
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_branches),
            nn.BatchNorm1d(num_branches), nn.ReLU(inplace=True), nn.Softmax(dim=1)
        ) if gate == 'learned' else None
        init_weights(self)


def one_resnet(depth, num_classes=10, num_branches=3, branch_point='stage3', gate='learned',
               depth_rule='6n+2'):
    return ONEResNet(depth, num_classes, num_branches, branch_point, gate, depth_rule)

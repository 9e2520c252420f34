"""ONE: a CIFAR ResNet whose last stage is replicated into m branches, plus a gate."""
import torch
import torch.nn as nn

from .resnet import blocks_per_stage, init_weights, make_stage

__all__ = ['one_resnet', 'ONEResNet', 'branch_state_dict']


class Branch(nn.Module):
    """One branch: its own copy of stage 3, the 8x8 average pool and a classifier."""

    def __init__(self, block, inplanes, blocks, num_classes):
        super().__init__()
        self.layer3, channels = make_stage(block, inplanes, 64, blocks, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.avgpool(self.layer3(x)).flatten(1))


class ONEResNet(nn.Module):
    """forward(x) returns (branch_logits, ensemble_logits): branch_logits has shape
    (num_branches, batch, num_classes); ensemble_logits = sum_i gate_i * branch_logits[i],
    shape (batch, num_classes)."""

    def __init__(self, depth, num_classes=10, num_branches=3):
        super().__init__()
        if num_branches < 1:
            raise ValueError(f'num_branches must be >= 1, got {num_branches}')
        n, block = blocks_per_stage(depth)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1, channels = make_stage(block, 16, 16, n, 1)
        self.layer2, channels = make_stage(block, channels, 32, n, 2)
        self.branches = nn.ModuleList(
            Branch(block, channels, n, num_classes) for _ in range(num_branches))
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_branches),
            nn.BatchNorm1d(num_branches), nn.ReLU(inplace=True), nn.Softmax(dim=1))
        init_weights(self)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        logits = torch.stack([branch(x) for branch in self.branches])
        weights = self.gate(x)                                   # (batch, num_branches)
        ensemble = torch.einsum('bm,mbc->bc', weights, logits)
        return logits, ensemble


def one_resnet(depth, num_classes=10, num_branches=3):
    return ONEResNet(depth, num_classes, num_branches)


def branch_state_dict(state_dict, branch):
    """The weights of a plain `resnet` made of the shared trunk and branch `branch` (0-based)."""
    prefix = f'branches.{branch}.'
    plain = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            plain[key[len(prefix):]] = value
        elif not key.startswith(('branches.', 'gate.')):
            plain[key] = value
    return plain

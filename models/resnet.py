"""CIFAR ResNet of He et al. as used by ONE (bearpaw layout): depth = 6n + 2."""
import torch.nn as nn

from .backbone import Backbone, depth_rule, init_weights

__all__ = ['resnet', 'ResNet', 'BasicBlock', 'Bottleneck', 'blocks_per_stage', 'DEPTH_RULES', 'make_stage',
           'init_weights']


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3(stride) -> 1x1 to planes * 4. ResNeXt's block is this one with a wider,
    grouped 3x3 (`width` channels in `groups` groups; by default planes and 1)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, width=None, groups=1):
        super().__init__()
        width = width or planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


# How a depth maps to blocks per stage. '6n+2' is ONE's (bearpaw's) rule for both block types,
# so its "ResNet-110" has 18 Bottleneck blocks a stage (164 weight layers); '9n+2' counts a
# Bottleneck's three layers, as He et al.'s CIFAR bottleneck nets and OKDDip's code do (its
# ResNet-110: 12 a stage). Below depth 44 both rules give the same BasicBlock net.
DEPTH_RULES = ('6n+2', '9n+2')


def blocks_per_stage(depth, rule='6n+2'):
    """n blocks per stage for `depth` under `rule`, and the block type: BasicBlock below
    depth 44, Bottleneck from 44 (the original's choice)."""
    if rule not in DEPTH_RULES:
        raise ValueError(f'depth rule must be one of {", ".join(DEPTH_RULES)}, got {rule!r}')
    if rule == '9n+2' and isinstance(depth, int) and depth >= 44:
        return depth_rule(depth, 9, 2, '47, 56, 110, 164', ' for Bottleneck nets under the '
                          '9n+2 rule'), Bottleneck
    n = depth_rule(depth, 6, 2, '8, 14, 20, 32, 44, 110')
    return n, Bottleneck if depth >= 44 else BasicBlock


def make_stage(block, inplanes, planes, blocks, stride, **block_kwargs):
    """A stage of `blocks` residual blocks; returns (stage, its output channels)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion))
    layers = [block(inplanes, planes, stride, downsample, **block_kwargs)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes, **block_kwargs) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


class ResNet(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes). Keeps the bearpaw
    names (conv1, bn1, layer1..3, fc), so its checkpoints load unchanged; see backbone.py."""
    stem_names = ('conv1', 'bn1', 'relu')
    stage_names = ('layer1', 'layer2', 'layer3')
    head_names = ('avgpool',)

    def __init__(self, depth, num_classes=10, depth_rule='6n+2'):
        super().__init__()
        n, block = blocks_per_stage(depth, depth_rule)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        channels = [16]
        for name, planes, stride in (('layer1', 16, 1), ('layer2', 32, 2), ('layer3', 64, 2)):
            stage, out = make_stage(block, channels[-1], planes, n, stride)
            self.add_module(name, stage)
            channels.append(out)
        self.avgpool = nn.AvgPool2d(8)
        self.finish(channels, num_classes)


def resnet(depth, num_classes=10, depth_rule='6n+2'):
    return ResNet(depth, num_classes, depth_rule)

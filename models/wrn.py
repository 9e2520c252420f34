"""Wide ResNet for CIFAR (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016):
WRN-d-k, depth d = 6n + 4, widening factor k.

A 3x3 conv of 16 filters, three groups of n pre-activation blocks B(3,3) with 16k, 32k and 64k
channels (stride 2 at the start of groups 2 and 3), then BN-ReLU, global average pooling and a
Linear classifier. A block is BN-ReLU-3x3 conv-BN-ReLU-dropout-3x3 conv plus the shortcut: the
identity, or where the shape changes a 1x1 conv of the block's pre-activated input (the
paper's dropout sits between the two convs, after the ReLU). WRN-28-10 has 36.5M parameters
on CIFAR-10 (the paper's CIFAR results). Convs have no bias.
"""
import torch.nn as nn
import torch.nn.functional as F

from .backbone import Backbone, depth_rule, positive_int

__all__ = ['wrn', 'WideResNet', 'WideBlock']


class WideBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, dropout):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(inplanes, planes, 1, stride, bias=False)
                         if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stem_names = ('conv1',)
    stage_names = ('stage1', 'stage2', 'stage3')
    head_names = ('norm', 'relu', 'avgpool')

    def __init__(self, depth=28, widen_factor=10, drop=0.0, num_classes=10):
        super().__init__()
        n = depth_rule(depth, 6, 4, '10, 16, 22, 28, 40')
        positive_int('widen_factor', widen_factor)
        if not (isinstance(drop, (int, float)) and 0 <= drop < 1):
            raise ValueError(f'drop must be in [0, 1), got {drop!r}')
        channels = [16]
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        for s, name in enumerate(self.stage_names):
            planes, stride = 16 * 2 ** s * widen_factor, 1 if s == 0 else 2
            blocks = [WideBlock(channels[-1], planes, stride, drop)]
            blocks += [WideBlock(planes, planes, 1, drop) for _ in range(1, n)]
            self.add_module(name, nn.Sequential(*blocks))
            channels.append(planes)
        self.norm = nn.BatchNorm2d(channels[-1])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.finish(channels, num_classes)


def wrn(depth=28, widen_factor=10, drop=0.0, num_classes=10):
    return WideResNet(depth, widen_factor, drop, num_classes)

"""ResNeXt for CIFAR (Xie, Girshick, Dollar, Tu, He, "Aggregated Residual Transformations for
Deep Neural Networks", CVPR 2017, its CIFAR experiments): depth = 9n + 2.

A 3x3 conv of 64 filters (+ BN + ReLU), three stages of n bottleneck blocks with outputs of
256, 512 and 1024 channels, global average pooling and a Linear classifier; ResNeXt-29 has
n = 3. A block is the ResNet bottleneck 1x1 -> 3x3 -> 1x1 (BN after each, ReLU after the
first two and after the sum) whose 3x3 conv is grouped: `cardinality` groups of
`base_width` * 2^(s-1) channels in stage s (the paper's form (c) of Fig. 3), stride 2 in the
first block of stages 2 and 3; shortcuts are identities, or a 1x1 conv + BN projection where
the shape changes. ResNeXt-29 (8x64d), the network of the ONE paper's table, has 34.4M
parameters on CIFAR-10 (the ResNeXt paper's Table 7).
"""
import torch.nn as nn

from .backbone import Backbone, depth_rule, positive_int
from .resnet import Bottleneck, make_stage

__all__ = ['resnext', 'ResNeXt']


class ResNeXt(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stem_names = ('conv1', 'bn1', 'relu')
    stage_names = ('stage1', 'stage2', 'stage3')
    head_names = ('avgpool',)

    def __init__(self, depth=29, cardinality=8, base_width=64, num_classes=10):
        super().__init__()
        n = depth_rule(depth, 9, 2, '11, 20, 29')
        positive_int('cardinality', cardinality)
        positive_int('base_width', base_width)
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        channels = [64]
        for s, name in enumerate(self.stage_names):
            stage, out = make_stage(Bottleneck, channels[-1], 64 * 2 ** s, n, 1 if s == 0 else 2,
                                    width=cardinality * base_width * 2 ** s, groups=cardinality)
            self.add_module(name, stage)
            channels.append(out)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.finish(channels, num_classes)


def resnext(depth=29, cardinality=8, base_width=64, num_classes=10):
    return ResNeXt(depth, cardinality, base_width, num_classes)

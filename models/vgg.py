"""VGG with batch normalisation for CIFAR (Simonyan & Zisserman, ICLR 2015, configurations
A, B, D, E = VGG-11, 13, 16, 19; BN after every conv as in Ioffe & Szegedy).

Five stages of 3x3 convs (64, 128, 256, 512, 512 channels; each conv + BN + ReLU) that each
end in a 2x2 max pool, so a 32x32 image leaves the last stage at 1x1; then global average
pooling (the identity there) and ONE Linear classifier, 512 -> num_classes, in place of the
ImageNet network's three fully connected layers (as in the common CIFAR versions; OKDDip's
code instead keeps a 512-512-512-classes head with dropout, 0.53M more parameters). Convs
have no bias (BN follows each). No stem: the first stage starts on the image, so branching
at 'stage1' gives fully separate branches gated on the image's mean colour.
VGG-16 has 14,724,042 parameters for 10 classes, its classifier 5,130 of them.
"""
import torch.nn as nn

from .backbone import Backbone

__all__ = ['vgg', 'VGG']

# Convs per stage of each configuration of the VGG paper's Table 1.
CONVS_PER_STAGE = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
                   19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def conv_stage(inplanes, planes, convs):
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(inplanes if i == 0 else planes, planes, 3, padding=1, bias=False),
                   nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class VGG(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stage_names = ('stage1', 'stage2', 'stage3', 'stage4', 'stage5')
    head_names = ('avgpool',)

    def __init__(self, depth=16, num_classes=10):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in CONVS_PER_STAGE:
            raise ValueError(f'depth must be one of 11, 13, 16, 19, got {depth!r}')
        channels = [3]
        for name, planes, convs in zip(self.stage_names, WIDTHS, CONVS_PER_STAGE[depth]):
            self.add_module(name, conv_stage(channels[-1], planes, convs))
            channels.append(planes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.finish(channels, num_classes)


def vgg(depth=16, num_classes=10):
    return VGG(depth, num_classes)

"""The VGG of the OKDDip authors' code (DefangChen/OKDDip, models/model_cifar/vgg.py, vgg_one.py
and vgg_GL.py), which produced the OKDDip paper's VGG-16 rows: -a okddip_vgg.

It differs from the project's VGG (models/vgg.py) in three ways, and nowhere else:
  - every 3x3 convolution has a bias (initialised to 0);
  - the head is a 512-512-512-classes MLP, Linear-ReLU-Dropout twice then the classifier
    (vgg.py: `classifier`), instead of one Linear; its Linear layers start from N(0, 0.01) with
    zero biases;
  - dropout in that head: --drop, 0 by default (train.py's --dropout), 0.5 in the branches of
    ONE, CL-ILR and OKDDip (vgg_one.py's nn.Dropout(), vgg_GL.py's dropout=0.5), where the
    branch default comes from the network registry (models/registry.py).
VGG-16 has 15,299,748 parameters for 100 classes (the project's VGG-16: 14,770,212). The
authors' code builds VGG-16 and VGG-19; VGG-11 and 13 follow the same rules.

Under backbone.py's contract the flattened output of the last stage is the network's pooled
features (what OKDDip's attention reads, as vgg_GL.py's query and key do) and `fc` is the whole
MLP, so the trunk and branch K of ONE's branches still form exactly this plain network.
"""
import torch.nn as nn

from .backbone import Backbone
from .vgg import CONVS_PER_STAGE, WIDTHS

__all__ = ['okddip_vgg', 'OKDDipVGG']


def conv_stage(inplanes, planes, convs):
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(inplanes if i == 0 else planes, planes, 3, padding=1),
                   nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def mlp_head(channels, num_classes, drop):
    return nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Dropout(drop),
                         nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Dropout(drop),
                         nn.Linear(channels, num_classes))


class OKDDipVGG(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stage_names = ('stage1', 'stage2', 'stage3', 'stage4', 'stage5')
    head_names = ('flatten',)

    def __init__(self, depth=16, drop=0.0, num_classes=10):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in CONVS_PER_STAGE:
            raise ValueError(f'depth must be one of 11, 13, 16, 19, got {depth!r}')
        if not (isinstance(drop, (int, float)) and 0 <= drop < 1):
            raise ValueError(f'drop must be in [0, 1), got {drop!r}')
        channels = [3]
        for name, planes, convs in zip(self.stage_names, WIDTHS, CONVS_PER_STAGE[depth]):
            self.add_module(name, conv_stage(channels[-1], planes, convs))
            channels.append(planes)
        self.flatten = nn.Flatten()      # a 32x32 image leaves the last stage at 1x1
        self.stage_channels = tuple(channels)
        self.fc = mlp_head(channels[-1], num_classes, drop)
        init_like_the_okddip_code(self)


def init_like_the_okddip_code(module):
    """vgg.py's initialisation: convs N(0, sqrt(2 / fan_out)) with zero biases, BN (1, 0),
    Linear N(0, 0.01) with zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def okddip_vgg(depth=16, drop=0.0, num_classes=10):
    return OKDDipVGG(depth, drop, num_classes)

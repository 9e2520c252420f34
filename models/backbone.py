"""The contract every CIFAR backbone keeps, so that any method can use or split any of them.

A backbone is a chain of named modules in four parts, each attribute named in a tuple:

    stem_names    applied in order to the image: everything before the first stage (may be
                  empty, as in VGG, whose first stage starts on the image)
    stage_names   the stages, in order; the k-th is branch point 'stagek' (1-based) whatever
                  its attribute is called (the CIFAR ResNet keeps bearpaw's layer1..layer3)
    head_names    applied after the last stage (a final BN + ReLU in pre-activation networks,
                  then global average pooling); their output is flattened to (batch, C)
    fc            the classifier, C -> num_classes

and `stage_channels`: the channels entering each stage, then those leaving the last one
(len(stage_names) + 1 entries; the last is what fc takes). `fc` is a Linear but in the OKDDip
code's VGG (models/okddip_vgg.py), whose classifier is an MLP. `shared_in_branches` names the
modules that ONE's branches share as one object (none but in the OKDDip code's DenseNet).

    stem(x)       the stem's output
    pool(x)       the head on the last stage's output -> (batch, C)
    features(x)   pool(stages(stem(x))): the pooled features, (batch, C)
    forward(x)    fc(features(x)): the class logits, (batch, num_classes)

Nothing else runs between these parts, which is what lets models/branched.py cut any backbone
at a stage boundary into ONE's shared trunk and branches while keeping its state-dict keys.
"""
import math

import torch.nn as nn

__all__ = ['Backbone', 'run_modules', 'depth_rule', 'positive_int', 'init_weights']


def run_modules(module, names, x):
    """x through module.<name> for each name, in order."""
    for name in names:
        x = getattr(module, name)(x)
    return x


class Backbone(nn.Module):
    """Base class of the CIFAR backbones: subclasses build their modules, name them in the
    three tuples, set stage_channels and fc; the forward pass is written once, here."""
    stem_names = ()
    stage_names = ()
    head_names = ()
    shared_in_branches = ()

    def stem(self, x):
        return run_modules(self, self.stem_names, x)

    def pool(self, x):
        return run_modules(self, self.head_names, x).flatten(1)

    def features(self, x):
        return self.pool(run_modules(self, self.stage_names, self.stem(x)))

    def forward(self, x):
        return self.fc(self.features(x))

    def finish(self, stage_channels, num_classes):
        """The end of a subclass's __init__: record stage_channels, add the classifier on the
        last stage's channels, initialise every weight."""
        self.stage_channels = tuple(stage_channels)
        self.fc = nn.Linear(stage_channels[-1], num_classes)
        init_weights(self)


def depth_rule(depth, step, offset, examples, context=''):
    """n of depth = step * n + offset (n >= 1), or a ValueError naming the rule."""
    if (isinstance(depth, bool) or not isinstance(depth, int) or depth < step + offset
            or (depth - offset) % step != 0):
        raise ValueError(f'depth must be {step}n+{offset} with n >= 1 ({examples}, ...)'
                         f'{context}, got {depth!r}')
    return (depth - offset) // step


def positive_int(name, value):
    """Refuse anything but an int >= 1 for a width-like argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    return value


def init_weights(module):
    """He et al.'s fan-out init, the one the bearpaw ResNet (and fb.resnet.torch) uses, for
    every backbone here: conv ~ N(0, sqrt(2 / (k*k*out))), BN (1, 0); Linear keeps PyTorch's
    default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.weight.data.fill_(1)
            m.bias.data.zero_()

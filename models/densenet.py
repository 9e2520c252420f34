"""DenseNet for CIFAR (Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
Networks", CVPR 2017, Sec. 3-4).

A 3x3 conv (2k output channels for the bottleneck networks, 16 otherwise), three dense blocks
of n layers each at 32x32, 16x16 and 8x8, a transition between blocks (BN-ReLU-1x1 conv to
floor(compression * C) channels, 2x2 average pool), then BN-ReLU, global average pooling and a
Linear classifier. Each layer sees the concatenation of all earlier feature maps of its block
and adds k (the growth rate) maps: BN-ReLU-3x3 conv, or with bottleneck=True
BN-ReLU-1x1 conv (4k maps)-BN-ReLU-3x3 conv. Depth counts the convs and the classifier:
6n + 4 with bottlenecks, 3n + 4 without. DenseNet-BC (bottleneck=True, compression=0.5):
L=190, k=40 is the ONE paper's network (25.6M parameters on CIFAR-10), L=100, k=12 0.8M;
DenseNet (bottleneck=False, compression=1) L=40, k=12 1.0M (the DenseNet paper's Table 2).
compression=None is the paper's for the form: 0.5 with bottlenecks (BC), 1 without.
The paper's dropout (0.2, only for the runs without data augmentation) is left out.

Stage s is the transition into block s (none for s = 1) and block s, so a branch at 'stageK'
owns the transition that compresses the trunk's output.

memory_efficient=True recomputes each layer's concatenation + BN + ReLU + first conv in the
backward pass (torch.utils.checkpoint) instead of keeping them, the quadratic part of a
DenseNet's activation memory (Pleiss et al., "Memory-Efficient Implementation of DenseNets",
2017): same outputs, gradients and BN running statistics, one extra forward of those parts.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .backbone import Backbone, depth_rule, positive_int

__all__ = ['densenet', 'DenseNet', 'DenseLayer', 'DenseBlock', 'Transition']


def batch_norm(bn, x, update_stats=True):
    """bn(x), optionally without touching its running statistics: a recomputation in the
    backward pass must not count the batch twice. In training mode BN normalises with the
    batch's own statistics either way, so the output is the same; the statistics it would
    update are copies (not None, so that it saves the same tensors for the backward pass)."""
    if update_stats or not bn.training:
        return bn(x)
    return F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                        True, 0.0, bn.eps)


class DenseLayer(nn.Module):
    """forward(features) -> the layer's k new maps, from the list of all earlier maps."""

    def __init__(self, in_channels, growth_rate, bottleneck, memory_efficient=False):
        super().__init__()
        width = 4 * growth_rate if bottleneck else growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = (nn.Conv2d(in_channels, width, 1, bias=False) if bottleneck
                      else nn.Conv2d(in_channels, width, 3, padding=1, bias=False))
        if bottleneck:
            self.norm2 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.bottleneck = bottleneck
        self.memory_efficient = memory_efficient

    def concat_norm_conv(self, features, update_stats=True):
        x = batch_norm(self.norm1, torch.cat(features, 1), update_stats)
        return self.conv1(F.relu(x, inplace=True))

    def forward(self, features):
        if self.memory_efficient and torch.is_grad_enabled():
            calls = []

            def recomputable(*features):      # the first call is the forward pass itself
                calls.append(None)
                return self.concat_norm_conv(features, update_stats=len(calls) == 1)
            out = checkpoint(recomputable, *features, use_reentrant=False)
        else:
            out = self.concat_norm_conv(features)
        if self.bottleneck:
            out = self.conv2(F.relu(self.norm2(out), inplace=True))
        return out


class DenseBlock(nn.Module):
    """forward(x) -> x concatenated with the maps of every layer of the block."""

    def __init__(self, in_channels, num_layers, growth_rate, bottleneck, memory_efficient):
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_channels + i * growth_rate, growth_rate, bottleneck, memory_efficient)
            for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels), relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False), pool=nn.AvgPool2d(2)))


class DenseNet(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stem_names = ('conv1',)
    stage_names = ('stage1', 'stage2', 'stage3')
    head_names = ('norm', 'relu', 'avgpool')

    def __init__(self, depth=190, growth_rate=40, bottleneck=True, compression=None,
                 num_classes=10, memory_efficient=False):
        super().__init__()
        if not isinstance(bottleneck, bool):
            raise ValueError(f'bottleneck must be True or False, got {bottleneck!r}')
        if compression is None:
            compression = 0.5 if bottleneck else 1
        n = (depth_rule(depth, 6, 4, '10, 16, 40, 100, 190', ' when bottleneck=True')
             if bottleneck else depth_rule(depth, 3, 4, '7, 10, 13, 40', ' when bottleneck=False'))
        positive_int('growth_rate', growth_rate)
        if not (isinstance(compression, (int, float)) and 0 < compression <= 1):
            raise ValueError(f'compression must be in (0, 1], got {compression!r}')
        channels = [2 * growth_rate if bottleneck else 16]
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        for s, name in enumerate(self.stage_names):
            parts, block_in = OrderedDict(), channels[-1]
            if s > 0:
                block_in = int(compression * channels[-1])       # the paper's floor(theta m)
                if block_in < 1:
                    raise ValueError(f'compression {compression} leaves no channels')
                parts['transition'] = Transition(channels[-1], block_in)
            parts['block'] = DenseBlock(block_in, n, growth_rate, bottleneck, memory_efficient)
            self.add_module(name, nn.Sequential(parts))
            channels.append(parts['block'].out_channels)
        self.norm = nn.BatchNorm2d(channels[-1])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.finish(channels, num_classes)


def densenet(depth=190, growth_rate=40, bottleneck=True, compression=None, num_classes=10,
             memory_efficient=False):
    return DenseNet(depth, growth_rate, bottleneck, compression, num_classes, memory_efficient)

"""Every network -a can name, one entry each: registering a network is one line here.

An entry says what builds the network and everything the rest of the project derives from it:
the -a choices of every method, --depth's help, how tables name the network, which datasets it
trains on, the smallest form the tests train (tests/test_networks.py, tests/test_backbones.py),
and the defaults its branches take under ONE, CL-ILR and OKDDip. Each constructor takes depth
(torchvision's networks: none), num_classes and its own keywords, each of which is a flag of
the same name (methods/networks.py's NETWORK_FLAGS holds their help).
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import imagenet
from .densenet import densenet
from .okddip_densenet import okddip_densenet
from .okddip_vgg import okddip_vgg
from .resnet import resnet
from .resnext import resnext
from .vgg import vgg
from .wrn import wrn

__all__ = ['Network', 'NETWORKS', 'CIFAR_NETWORKS', 'IMAGENET_NETWORKS']


@dataclass(frozen=True)
class Network:
    build: Callable           # (depth=, num_classes=, **its keywords) -> backbone.py's contract
    title: str                # how tables name it, before its depth ('ResNet' -> 'ResNet-32')
    default: str              # the network that unset flags give, for --depth's help
    tiny: dict                # its smallest form (constructor keywords): what the tests train
    depth: Optional[int] = None   # the depth where the constructor has no default (ResNet), or
    #                               torchvision's fixed depth
    imagenet: bool = False    # torchvision's: --dataset imagenet only, no --depth or width flags
    source: str = ''          # whose code the network follows, where not its paper's (in names)
    branch_defaults: dict = field(default_factory=dict)  # in ONE's, CL-ILR's, OKDDip's branches

    def name(self, depth):
        """e.g. 'ResNet-32', 'VGG-16 (OKDDip code)', 'ResNet-18'."""
        text = self.title if self.imagenet else f'{self.title}-{depth}'
        return f'{text} ({self.source})' if self.source else text


NETWORKS = {
    'resnet': Network(resnet, 'ResNet', 'ResNet-32 (depth 32)', {'depth': 8}, depth=32),
    'resnext': Network(resnext, 'ResNeXt', 'ResNeXt-29 (8x64d)',
                       {'depth': 11, 'cardinality': 2, 'base_width': 2}),
    'densenet': Network(densenet, 'DenseNet', 'DenseNet-BC-190 (k=40)',
                        {'depth': 10, 'growth_rate': 4}),
    'wrn': Network(wrn, 'WRN', 'WRN-28-10', {'depth': 10, 'widen_factor': 1, 'drop': 0.3}),
    'vgg': Network(vgg, 'VGG', 'VGG-16', {'depth': 11}),
    'okddip_vgg': Network(okddip_vgg, 'VGG', "VGG-16 of the OKDDip code", {'depth': 11},
                          source='OKDDip code', branch_defaults={'drop': 0.5}),
    'okddip_densenet': Network(okddip_densenet, 'DenseNet', 'DenseNet-BC-40-12 of the OKDDip code',
                               {'depth': 10, 'growth_rate': 4}, source='OKDDip code'),
    **{name: Network(build, title, title, {}, depth=depth, imagenet=True)
       for name, build, title, depth in imagenet.NETWORKS},
}
CIFAR_NETWORKS = tuple(name for name, network in NETWORKS.items() if not network.imagenet)
IMAGENET_NETWORKS = tuple(name for name, network in NETWORKS.items() if network.imagenet)

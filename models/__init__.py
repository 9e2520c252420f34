"""The networks: CIFAR backbones (one file each, all keeping backbone.py's contract),
torchvision's ImageNet ResNets in that contract (imagenet.py), the OKDDip code's networks
(okddip_vgg.py, okddip_densenet.py), ONE's gated branches over any of them (branched.py), the
seed's ONE ResNet (one_resnet.py) and the methods' own models. registry.py lists every network
-a can name."""
from .branched import branch_points, branch_state_dict, branched
from .densenet import densenet
from .okddip_densenet import okddip_densenet
from .okddip_vgg import okddip_vgg
from .one_resnet import one_resnet
from .registry import CIFAR_NETWORKS, IMAGENET_NETWORKS, NETWORKS, Network
from .resnet import blocks_per_stage, resnet
from .resnext import resnext
from .vgg import vgg
from .wrn import wrn

__all__ = ['NETWORKS', 'CIFAR_NETWORKS', 'IMAGENET_NETWORKS', 'Network',
           'resnet', 'resnext', 'densenet', 'wrn', 'vgg', 'okddip_vgg', 'okddip_densenet',
           'one_resnet', 'branched', 'branch_points', 'branch_state_dict', 'blocks_per_stage']

"""The networks: CIFAR backbones (one file each, all keeping backbone.py's contract),
torchvision's ImageNet ResNets in that contract (imagenet.py), ONE's gated branches over any
of them (branched.py), the seed's ONE ResNet (one_resnet.py) and the methods' own models."""
from .branched import branch_points, branch_state_dict, branched
from .densenet import densenet
from .imagenet import IMAGENET_BACKBONES, IMAGENET_DEPTHS, IMAGENET_NAMES
from .one_resnet import one_resnet
from .resnet import blocks_per_stage, resnet
from .resnext import resnext
from .vgg import vgg
from .wrn import wrn

# The plain backbones by their -a name (methods/networks.py); each constructor takes its flags'
# names as keyword arguments (depth, num_classes and the backbone's own width flags).
BACKBONES = {'resnet': resnet, 'resnext': resnext, 'densenet': densenet, 'wrn': wrn, 'vgg': vgg}
# How tables and logs name them.
NETWORK_NAMES = {'resnet': 'ResNet', 'resnext': 'ResNeXt', 'densenet': 'DenseNet', 'wrn': 'WRN',
                 'vgg': 'VGG'}

__all__ = ['BACKBONES', 'NETWORK_NAMES', 'IMAGENET_BACKBONES', 'IMAGENET_DEPTHS', 'IMAGENET_NAMES',
           'resnet', 'resnext', 'densenet', 'wrn', 'vgg', 'one_resnet',
           'branched', 'branch_points', 'branch_state_dict', 'blocks_per_stage']

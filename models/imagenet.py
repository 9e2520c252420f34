"""torchvision's ImageNet ResNets, used as they are, declared in backbone.py's contract.

torchvision's ResNet is already a stem (conv1, bn1, relu, maxpool), four stages (layer1..4),
global average pooling and fc, run in that order with nothing between: exactly the contract.
So each constructor builds torchvision's own model and only names those parts; the model
keeps torchvision's forward and state-dict keys, and models/branched.py's trunk + branch K is
a state dict that `torchvision.models.resnet18()` (or the matching constructor) loads with
strict=True. The branches own layer4 by default (branch point 'stage4').
"""
import torchvision.models as tv

__all__ = ['NETWORKS']

STEM = ('conv1', 'bn1', 'relu', 'maxpool')
STAGES = ('layer1', 'layer2', 'layer3', 'layer4')
HEAD = ('avgpool',)


def declare_parts(net):
    """Name a torchvision ResNet's parts for models/branched.py (backbone.py's contract)."""
    net.stem_names, net.stage_names, net.head_names = STEM, STAGES, HEAD
    net.shared_in_branches = ()
    net.stage_channels = (*(getattr(net, name)[0].conv1.in_channels for name in STAGES),
                          net.fc.in_features)
    return net


def resnet18(num_classes=1000):
    return declare_parts(tv.resnet18(num_classes=num_classes))


def resnet34(num_classes=1000):
    return declare_parts(tv.resnet34(num_classes=num_classes))


def resnet50(num_classes=1000):
    return declare_parts(tv.resnet50(num_classes=num_classes))


def resnext50_32x4d(num_classes=1000):
    return declare_parts(tv.resnext50_32x4d(num_classes=num_classes))


# (-a name, constructor, name in tables, depth): the -a names are torchvision's.
NETWORKS = (('resnet18', resnet18, 'ResNet-18', 18), ('resnet34', resnet34, 'ResNet-34', 34),
            ('resnet50', resnet50, 'ResNet-50', 50),
            ('resnext50_32x4d', resnext50_32x4d, 'ResNeXt-50 (32x4d)', 50))

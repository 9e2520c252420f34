"""What a benchmark's model name means: the method that trains the model and its flags.

'ARCH-DEPTH' is a CIFAR network at the depth given, 'one_' in front for ONE over it; a name
without a depth is one of torchvision's ImageNet networks. benchmark.py and benchmarks/profile.py
name their models this way.
"""
from methods import METHODS
from models import IMAGENET_NETWORKS


def method_and_flags(name, **flags):
    """'one_resnext-29' -> (ONE, its flags for ResNeXt-29 with the paper's width); a plain
    name is the baseline's network. torchvision's networks have no depth: 'one_resnet18'
    (with the ImageNet recipe's flags)."""
    arch, _, depth = name.rpartition('-') if '-' in name else (name, '', '')
    method = METHODS['one' if arch.startswith('one_') else 'baseline']
    if arch.startswith('one_') and arch != 'one_resnet':
        arch = arch[len('one_'):]
    if arch in IMAGENET_NETWORKS:
        return method, method.defaults(dataset='imagenet', arch=arch, **flags)
    return method, method.defaults(arch=arch, depth=int(depth), **flags)

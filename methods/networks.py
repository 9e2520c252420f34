"""The networks a method trains: the -a values, their flags, and how a method builds them.

Plain networks are models.NETWORKS (models/registry.py): -a resnet, resnext, densenet, wrn,
vgg, the OKDDip code's okddip_vgg and okddip_densenet, and torchvision's ImageNet ResNets. Each
constructor takes depth, num_classes and its own keyword arguments, and each keyword is a flag
of the same name (`growth_rate` is --growth-rate; `drop` is the seed's --drop). A flag left
unset takes the constructor's default (the paper's network) or, in the branches of ONE, CL-ILR
and OKDDip, the network's branch default (okddip_vgg: dropout 0.5, as its authors' code); one
given to a network that has no such keyword is refused. Like --depth, these flags are part of
a run's identity: a checkpoint of ResNeXt-29 (8x64d) is not resumed as (16x64d).

On --dataset imagenet the networks are torchvision's (-a resnet18, resnet34, resnet50,
resnext50_32x4d), of fixed depth and without width flags; the CIFAR networks are refused
there, and torchvision's on the CIFAR-sized datasets.

The multi-branch methods (ONE, CL-ILR, OKDDip) train their own layout of the CIFAR ResNet
under -a METHOD_resnet (the seed's one_resnet, ...), and over any other backbone the branches
of models/branched.py: the trunk and branch K form exactly the plain network, which
export_branch.py writes.
"""
import argparse
import contextlib
import inspect

import torch

from models import CIFAR_NETWORKS, IMAGENET_NETWORKS, NETWORKS, branch_points
from models.branched import Branched
from models.resnet import DEPTH_RULES
from utils.errors import UserError
from utils.imagefolder import IMAGENET

# Every network keyword -> (type, help). tests/test_networks.py checks that these are exactly
# the constructors' keywords; each constructor's default is the flag's.
NETWORK_FLAGS = {
    'depth_rule': (str, "ResNet: blocks per stage of a Bottleneck net (depth >= 44): 6n+2, the "
                        "ONE code's (ResNet-110: 18 a stage), or 9n+2, He et al.'s layer count "
                        "and the OKDDip code's (ResNet-110: 12 a stage)"),
    'cardinality': (int, 'ResNeXt: groups of the grouped 3x3 convolutions'),
    'base_width': (int, 'ResNeXt: channels per group in stage 1 (doubling each stage)'),
    'growth_rate': (int, 'DenseNets: k, the channels each layer adds'),
    'bottleneck': (bool, 'DenseNet: the BC form (1x1 bottlenecks, depth 6n+4); '
                         '--no-bottleneck: the original DenseNet (depth 3n+4, e.g. 40-12)'),
    'final_norm': (bool, "OKDDip-code DenseNet: BatchNorm and ReLU before the pooling "
                         "(--no-final-norm: as the OKDDip code's DenseNet leader, which it "
                         'exports as)'),
    'compression': (float, 'DenseNet: theta, the fraction of channels a transition keeps '
                           '(default: 0.5 for BC, 1 with --no-bottleneck)'),
    'memory_efficient': (bool, 'DenseNets: recompute the concatenations and 1x1 bottlenecks in '
                               'the backward pass (less memory, one more forward of those parts; '
                               'benchmark.py --memory-efficient measures both)'),
    'widen_factor': (int, 'WRN: k, the width multiplier'),
    'drop': (float, "WRN: dropout between each block's convolutions; OKDDip-code VGG: in the "
                    'head (the other networks have no dropout: only 0 is valid there)'),
}
CHOICES = {'depth_rule': DEPTH_RULES}
# Keywords that change how a network computes, not what: not part of a run's identity.
COMPUTATION_ONLY = ('memory_efficient',)
IMAGENET_ARCH = 'resnet18'   # -a's default on ImageNet: the ONE paper's ImageNet network


def keywords(backbone):
    """{keyword: default} of a backbone's own arguments (beyond depth and num_classes)."""
    parameters = inspect.signature(NETWORKS[backbone].build).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in ('depth', 'num_classes')}


def backbone_of(arch):
    """The plain network under an arch: a method's own layout is named METHOD_BACKBONE
    (one_resnet, clilr_resnet: the CIFAR ResNet), a plain network by itself."""
    return arch if arch in NETWORKS else arch.rsplit('_', 1)[-1]


def network_name(arch, depth):
    """How tables name a network, e.g. 'ResNet-32' for resnet and one_resnet alike."""
    name = backbone_of(str(arch))
    return NETWORKS[name].name(depth) if name in NETWORKS else f'{name}-{depth}'


def default_depth(backbone):
    """The registry's depth (the ResNet's 32, torchvision's own), else the constructor's."""
    network = NETWORKS[backbone]
    return network.depth or inspect.signature(network.build).parameters['depth'].default


def depth_help():
    defaults = ', '.join(f'{NETWORKS[b].default} for -a {b}' for b in CIFAR_NETWORKS)
    return (f"layers (default: the paper's network: {defaults}; torchvision's networks have the "
            'depth their name says)')


def add_network_flags(parser, archs):
    """-a (the first of `archs` by default), --depth and every network keyword's flag."""
    parser.add_argument('-a', '--arch', default=archs[0], choices=archs,
                        help=f'the network (default on ImageNet: {IMAGENET_ARCH}); '
                             + ', '.join(f'{a}: {describe_arch(a)}' for a in archs))
    parser.dataset_defaults = {IMAGENET: {'arch': IMAGENET_ARCH}}
    parser.add_argument('--depth', type=int, default=None, help=depth_help())
    for key, (kind, text) in NETWORK_FLAGS.items():
        flag = '--' + key.replace('_', '-')
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        elif key != 'drop':  # the seed's --drop is one of the shared flags (utils/cli.py)
            parser.add_argument(flag, type=kind, default=None, choices=CHOICES.get(key),
                                help=text)


def describe_arch(arch):
    backbone = backbone_of(arch)
    network = NETWORKS[backbone]
    if network.imagenet:
        return f"torchvision's {network.title} (ImageNet)"
    layout = 'its own layout of ' if arch != backbone else ''
    return f'{layout}{network.title}' + (f' of the {network.source}' if network.source else '')


def resolve_network_flags(args, branched=False):
    """Fill --depth and the network's unset flags with its defaults (`branched`: the
    network's branch defaults first); refuse a network flag given to a network without it,
    and a depth or width the network cannot build."""
    backbone = backbone_of(args.arch)
    network = NETWORKS[backbone]
    check_network_fits_dataset(args, backbone)
    own = keywords(backbone)
    given = [key for key in NETWORK_FLAGS if key not in own and _given(args, key)]
    if given:
        flag = '--' + given[0].replace('_', '-')
        takers = [a for a in CIFAR_NETWORKS if given[0] in keywords(a)]
        raise UserError(f'{flag}: {network.title} (-a {args.arch}) has no such setting; '
                        f'it is a flag of -a {", ".join(takers)}')
    if network.imagenet and args.depth not in (None, network.depth):
        raise UserError(f'--depth {args.depth}: -a {args.arch} has {network.depth} layers; '
                        f'choose the depth by -a ({", ".join(IMAGENET_NETWORKS)})')
    if args.depth is None:
        args.depth = default_depth(backbone)
    defaults = {**own, **(network.branch_defaults if branched else {})}
    for key, default in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, default)
    if getattr(args, 'drop', 0.0) is None:   # the seed's value, for networks without dropout
        args.drop = 0.0
    try:  # a depth or width the network cannot build: refused before anything is written
        build_plain(args, 1, meta=True)
    except ValueError as e:
        raise UserError(f'{flag_of(e)}: {e}') from None


def check_network_fits_dataset(args, backbone):
    """torchvision's networks on ImageNet only, and only they there."""
    on_imagenet = getattr(args, 'dataset', None) == IMAGENET
    if on_imagenet and not NETWORKS[backbone].imagenet:
        raise UserError(f'-a {args.arch} is a network for 32x32 images; on --dataset imagenet '
                        f'use -a {", ".join(IMAGENET_NETWORKS)}')
    if not on_imagenet and NETWORKS[backbone].imagenet:
        raise UserError(f'-a {args.arch} is an ImageNet network; on --dataset {args.dataset} use '
                        f'-a {", ".join(CIFAR_NETWORKS)} (or a method\'s own layout)')


def _given(args, key):
    value = getattr(args, key, None)
    return value is not None and not (key == 'drop' and value == 0)


def flag_of(error):
    """The flag a constructor's ValueError is about ('depth must be ...' -> '--depth')."""
    word = str(error).split(' ', 1)[0]
    return '--' + word.replace('_', '-') if word in (*NETWORK_FLAGS, 'depth') else '-a/--depth'


def network_kwargs(args):
    """The backbone's own keyword arguments, from args (a checkpoint's recorded args may
    predate a keyword: then its default). Part of a run's identity."""
    backbone = backbone_of(args.arch)
    return {key: getattr(args, key, default) for key, default in keywords(backbone).items()}


def network_identity(args):
    """What a checkpoint records of the network beyond arch and depth."""
    return {key: value for key, value in network_kwargs(args).items()
            if key not in COMPUTATION_ONLY}


def build_plain(args, num_classes, meta=False):
    """The plain network of args.arch's backbone (on the meta device: only its shapes)."""
    with torch.device('meta') if meta else contextlib.nullcontext():
        return NETWORKS[backbone_of(args.arch)].build(num_classes=num_classes,
                                                      **constructor_kwargs(args))


def constructor_kwargs(args):
    """The network constructor's keywords but num_classes: depth (torchvision's networks take
    none) and the backbone's own flags."""
    depth = {} if NETWORKS[backbone_of(args.arch)].imagenet else {'depth': args.depth}
    return {**depth, **network_kwargs(args)}


def build_branched(args, num_classes, gate, model_class=Branched):
    """ONE's branches (model_class: Branched or a method's subclass of it) over args.arch's
    backbone, cut at args.branch_point where the method has one, else at the last stage."""
    return model_class(NETWORKS[backbone_of(args.arch)].build, args.num_branches,
                       getattr(args, 'branch_point', None), gate, num_classes=num_classes,
                       **constructor_kwargs(args))


def check_branch_point(args):
    """--branch-point: a stage of the backbone (VGG has five, the others three); unset, the
    last one (ONE's choice)."""
    points = branch_points(build_plain(args, 1, meta=True))
    if args.branch_point is None:
        args.branch_point = points[-1]
    if args.branch_point not in points:
        raise UserError(f'--branch-point must be one of {", ".join(points)} for -a {args.arch}, '
                        f'got {args.branch_point}')


def plain_network_of(state, num_classes, meta=False, **keywords):
    """The plain network a checkpoint's member is (its arch's backbone, depth and the network
    keywords it records, `keywords` on top), untrained (on the meta device: only its shapes)."""
    recorded = {key: state[key] for key in NETWORK_FLAGS if key in state}
    return build_plain(argparse.Namespace(arch=state['arch'], depth=state['depth'],
                                          **{**recorded, **keywords}), num_classes, meta)

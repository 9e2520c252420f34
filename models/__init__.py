from .one_resnet import branch_state_dict, one_resnet
from .resnet import blocks_per_stage, resnet

# -a/--arch looks constructors up here; each takes (depth, num_classes, **kwargs).
ARCHS = {'resnet': resnet, 'one_resnet': one_resnet}

__all__ = ['ARCHS', 'resnet', 'one_resnet', 'branch_state_dict', 'blocks_per_stage']

"""The DenseNet-BC of the OKDDip authors' code (DefangChen/OKDDip, models/model_cifar/densenet.py,
densenet_one.py and densenet_GL.py), which produced the OKDDip paper's DenseNet rows:
-a okddip_densenet, DenseNet-BC-40-12 (their `densenetd40k12`) by default.

As a plain network it is the project's DenseNet-BC (models/densenet.py) but for two things:
  - the first convolution always has 24 channels (their num_init_features), where the DenseNet
    paper, and the project, give a BC network 2k: the same network at k = 12 (188,092
    parameters for 100 classes), a narrower one at k = 40 (DenseNet-BC-100-40: 8,107,136
    against 8,430,620);
  - convolutions start from He's fan-in init (kaiming_normal_), Linear biases from 0.
Each transition closes the stage before it, so a branch point at the last stage puts
transition 2 in the trunk, as the authors' branched models do.

Their ONE, CL-ILR and OKDDip models (densenet_one.py, densenet_GL.py) give every branch the
same dense-block object: the branches share block 3's weights and each owns only the final
BatchNorm and the classifier (`shared_in_branches`). The block runs once per branch, so its
BatchNorm statistics move once per branch and step, as theirs do. ONE over this network has
215,409 parameters for 100 classes (3 branches), CL-ILR 228,784 and OKDDip 233,008 (4).

Their OKDDip model also treats the last branch in two ways (densenet_GL.py, forward): as a peer
whose logits enter the attention's mixture and the leader's target, and as the group leader,
run again through block 3 and the pooling WITHOUT the final BatchNorm and ReLU, into the same
classifier. `okddip_leader_head` names that head; models/okddip.py builds it, and the leader
exports as this network with final_norm=False.
"""
from collections import OrderedDict

import torch.nn as nn

from .backbone import Backbone, depth_rule, positive_int
from .densenet import DenseBlock, Transition

__all__ = ['okddip_densenet', 'OKDDipDenseNet']

STEM_CHANNELS = 24


class OKDDipDenseNet(Backbone):
    """forward(x) returns the class logits, shape (batch, num_classes); see backbone.py."""
    stem_names = ('conv1',)
    stage_names = ('stage1', 'stage2', 'stage3')
    shared_in_branches = ('stage3',)
    # densenet_GL.py's leader: block 3, the pooling and the classifier, without the final
    # BatchNorm and ReLU: this network with `okddip_leader`'s keywords, whose head is this.
    okddip_leader = {'final_norm': False}
    okddip_leader_head = ('avgpool',)

    def __init__(self, depth=40, growth_rate=12, final_norm=True, num_classes=10,
                 memory_efficient=False):
        super().__init__()
        n = depth_rule(depth, 6, 4, '40, 100, 190', ' (the OKDDip code\'s DenseNet-BC)')
        positive_int('growth_rate', growth_rate)
        if not isinstance(final_norm, bool):
            raise ValueError(f'final_norm must be True or False, got {final_norm!r}')
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, padding=1, bias=False)
        channels = [STEM_CHANNELS]
        for s, name in enumerate(self.stage_names):
            parts = OrderedDict(block=DenseBlock(channels[-1], n, growth_rate, True,
                                                 memory_efficient))
            out = parts['block'].out_channels
            if s + 1 < len(self.stage_names):
                parts['transition'] = Transition(out, out // 2)
                out //= 2
            self.add_module(name, nn.Sequential(parts))
            channels.append(out)
        self.head_names = ('norm', 'relu', 'avgpool') if final_norm else ('avgpool',)
        if final_norm:
            self.norm = nn.BatchNorm2d(channels[-1])
            self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.stage_channels = tuple(channels)
        self.fc = nn.Linear(channels[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc.bias)


def okddip_densenet(depth=40, growth_rate=12, final_norm=True, num_classes=10,
                    memory_efficient=False):
    return OKDDipDenseNet(depth, growth_rate, final_norm, num_classes, memory_efficient)

"""OKDDip's leader and peers (Chen et al., AAAI 2020): ONE's layout without a gate, plus the
attention over the peers' pooled features. The objective and its sources are in
methods/okddip.py."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import run_modules
from .branched import Branched
from .one_resnet import ONEResNet
from .output import ModelOutput

__all__ = ['PeerAttention', 'LeaderAndPeers', 'OKDDipResNet', 'OKDDipBranches']

ATTENTION_REDUCTION = 8   # the projection width is C / 8, as the authors' code


class PeerAttention(nn.Module):
    """log alpha (B, n, n') from the features of n querying peers (B, n, C) and of the n' they
    attend to (B, n', C; by default the same n): log_softmax_b(L(h_a) . E(h_b))."""

    def __init__(self, channels, width):
        super().__init__()
        self.query = nn.Linear(channels, width, bias=False)   # W_L
        self.key = nn.Linear(channels, width, bias=False)     # W_E

    def forward(self, features, attended=None):
        attended = features if attended is None else attended
        energy = self.query(features) @ self.key(attended).transpose(1, 2)
        return F.log_softmax(energy, dim=-1)


class LeaderAndPeers:
    """OKDDip's forward pass over ONE's layout without a gate: returns ModelOutput(logits
    (m, B, classes) with the leader first, the mean of the peers' logits (B, classes),
    extras={'log_attention': log alpha over the peers (B, m - 1, m - 1)}).

    Over the OKDDip code's DenseNet (models/okddip_densenet.py, `okddip_leader_head`) its
    authors' layout instead: the leader's branch is also a peer, attended to and averaged in
    the leader's target, with its full head; the leader itself runs that branch again
    through `okddip_leader_head` alone. Then extras also hold 'attention_values', the m
    attended logits (the peers', then the leader's branch's), log alpha is
    (B, m - 1, m) and the ensemble is their mean (what the authors' code reports)."""

    def add_attention(self):
        channels = self.branches[0].stage_channels[-1]
        self.attention = PeerAttention(channels, channels // ATTENTION_REDUCTION)
        self.leader_head = getattr(getattr(self, 'backbone_class', None), 'okddip_leader_head',
                                   None)

    def forward(self, x):
        x = self.trunk(x)
        features = [branch.features(x) for branch in self.branches]
        logits = torch.stack([branch.fc(h) for branch, h in zip(self.branches, features)])
        if self.leader_head is None:
            log_attention = self.attention(torch.stack(features[1:], dim=1))
            return ModelOutput(logits, logits[1:].mean(0), {'log_attention': log_attention})
        values = torch.cat([logits[1:], logits[:1]])          # the peers, then the leader's branch
        attended = torch.stack(features[1:] + features[:1], dim=1)
        log_attention = self.attention(attended[:, :-1], attended)
        leader = self.branches[0]
        pooled = run_modules(leader, self.leader_head,
                             run_modules(leader, leader.stage_names, x)).flatten(1)
        members = torch.cat([leader.fc(pooled).unsqueeze(0), logits[1:]])
        return ModelOutput(members, values.mean(0),
                           {'log_attention': log_attention, 'attention_values': values})


class OKDDipResNet(LeaderAndPeers, ONEResNet):
    """OKDDip's branches on the CIFAR ResNet, split as ONE's (-a okddip_resnet)."""

    def __init__(self, depth, num_classes=10, num_branches=4, depth_rule='6n+2'):
        super().__init__(depth, num_classes, num_branches, branch_point='stage3', gate='average',
                         depth_rule=depth_rule)
        self.add_attention()


class OKDDipBranches(LeaderAndPeers, Branched):
    """OKDDip's branches on any other backbone, split at its last stage."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_attention()

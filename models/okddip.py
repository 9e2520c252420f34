"""OKDDip's leader and peers (Chen et al., AAAI 2020): ONE's layout without a gate, plus the
attention over the peers' pooled features. The objective and its sources are in
methods/okddip.py."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .branched import Branched
from .one_resnet import ONEResNet
from .output import ModelOutput

__all__ = ['PeerAttention', 'LeaderAndPeers', 'OKDDipResNet', 'OKDDipBranches']

ATTENTION_REDUCTION = 8   # the projection width is C / 8, as the authors' code


class PeerAttention(nn.Module):
    """log alpha (B, n, n) from peer features (B, n, C): log_softmax_b(L(h_a) . E(h_b))."""

    def __init__(self, channels, width):
        super().__init__()
        self.query = nn.Linear(channels, width, bias=False)   # W_L
        self.key = nn.Linear(channels, width, bias=False)     # W_E

    def forward(self, features):
        energy = self.query(features) @ self.key(features).transpose(1, 2)
        return F.log_softmax(energy, dim=-1)


class LeaderAndPeers:
    """OKDDip's forward pass over ONE's layout without a gate: returns ModelOutput(logits
    (m, B, classes) with the leader first, the mean of the peers' logits (B, classes),
    extras={'log_attention': log alpha over the peers (B, m - 1, m - 1)})."""

    def add_attention(self):
        channels = self.branches[0].fc.in_features
        self.attention = PeerAttention(channels, channels // ATTENTION_REDUCTION)

    def forward(self, x):
        x = self.trunk(x)
        features = [branch.features(x) for branch in self.branches]
        logits = torch.stack([branch.fc(h) for branch, h in zip(self.branches, features)])
        log_attention = self.attention(torch.stack(features[1:], dim=1))
        return ModelOutput(logits, logits[1:].mean(0), {'log_attention': log_attention})


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

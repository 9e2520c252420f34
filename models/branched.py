"""ONE's multi-branch network over any backbone of backbone.py's contract.

The trunk is the backbone's stem and the stages before the branch point; each of the m branches
owns its own copy of the stages from the branch point on, the head (pooling) and a classifier;
the gate reads the trunk's output. Every part keeps the plain backbone's attribute names, so
the trunk plus branch K is exactly a plain backbone: `branch_state_dict` exports it.

Branch points are 'stage1'..'stageK' (the first stage a branch owns). The ONE paper branches
the CIFAR ResNet at its last stage ('stage3'); 'stage1' is its "without sharing layers"
ablation, and gate='average' its "without the gate" one.
"""
import torch
import torch.nn as nn

from .backbone import Backbone, run_modules
from .output import ModelOutput

__all__ = ['branched', 'Branched', 'GatedBranches', 'Branch', 'branch_points', 'branch_state_dict',
           'GATES']

GATES = ('learned', 'average')


def branch_points(backbone):
    """The branch points a backbone offers: 'stage1'..'stageK'."""
    return tuple(f'stage{k}' for k in range(1, len(backbone.stage_names) + 1))


def _first_owned_stage(backbone, branch_point):
    """Index into stage_names of the first stage a branch owns; None means the last stage."""
    points = branch_points(backbone)
    if branch_point is None:
        return len(points) - 1
    if branch_point not in points:
        raise ValueError(f'branch_point must be one of {", ".join(points)} for '
                         f'{type(backbone).__name__}, got {branch_point!r}')
    return points.index(branch_point)


class Branch(Backbone):
    """One branch: a backbone with no stem, made of `backbone`'s stages from index `first`
    on, its head and its classifier, under the same names."""

    def __init__(self, backbone, first):
        super().__init__()
        self.stage_names = backbone.stage_names[first:]
        self.head_names = backbone.head_names
        self.stage_channels = backbone.stage_channels[first:]
        for name in self.stage_names + self.head_names + ('fc',):
            self.add_module(name, getattr(backbone, name))


class GatedBranches(nn.Module):
    """forward(x) returns ModelOutput(members, ensemble): the branches' logits, shape
    (num_branches, batch, num_classes), and sum_i gate_i * members[i] (the plain mean when the
    gate is None), shape (batch, num_classes).

    Subclasses build the trunk's modules (named in stem_names and shared_stages), `branches`
    and `gate`: AdaptiveAvgPool -> Linear(C_trunk, m) with bias -> BatchNorm1d(m) -> ReLU ->
    softmax over the m entries, on the trunk's output, or None."""
    stem_names = shared_stages = ()

    def trunk(self, x):
        """The shared layers: the stem and the stages before the branch point."""
        return run_modules(self, (*self.stem_names, *self.shared_stages), x)

    def forward(self, x):
        x = self.trunk(x)
        logits = torch.stack([branch(x) for branch in self.branches])
        if self.gate is None:
            return ModelOutput(logits, logits.mean(0))
        weights = self.gate(x)                                   # (batch, num_branches)
        return ModelOutput(logits, torch.einsum('bm,mbc->bc', weights, logits))


class Branched(GatedBranches):
    """ONE's gated branches over `backbone_fn(**backbone_kwargs)`, cut at `branch_point`."""

    def __init__(self, backbone_fn, num_branches=3, branch_point=None, gate='learned',
                 **backbone_kwargs):
        super().__init__()
        if isinstance(num_branches, bool) or not isinstance(num_branches, int) or num_branches < 1:
            raise ValueError(f'num_branches must be an integer >= 1, got {num_branches!r}')
        if gate not in GATES:
            raise ValueError(f'gate must be one of {", ".join(GATES)}, got {gate!r}')
        # One whole backbone per branch, so that each part is built and initialised exactly as
        # in the plain network; the first also gives the trunk, the others' trunks are dropped.
        nets = [backbone_fn(**backbone_kwargs)]
        first = _first_owned_stage(nets[0], branch_point)        # refuse before building more
        nets += [backbone_fn(**backbone_kwargs) for _ in range(1, num_branches)]
        for name in nets[0].shared_in_branches:   # one module that every branch runs
            for net in nets[1:]:
                setattr(net, name, getattr(nets[0], name))
        self.backbone_class = type(nets[0])
        self.branch_point = branch_points(nets[0])[first]
        self.stem_names = nets[0].stem_names
        self.shared_stages = nets[0].stage_names[:first]
        for name in self.stem_names + self.shared_stages:
            self.add_module(name, getattr(nets[0], name))
        self.branches = nn.ModuleList(Branch(net, first) for net in nets)
        channels = nets[0].stage_channels[first]
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_branches),
            nn.BatchNorm1d(num_branches), nn.ReLU(inplace=True), nn.Softmax(dim=1)
        ) if gate == 'learned' else None


def branched(backbone_fn, num_branches=3, branch_point=None, gate='learned', **backbone_kwargs):
    """ONE's gated branches over `backbone_fn(**backbone_kwargs)`; branch_point None is the
    backbone's last stage."""
    return Branched(backbone_fn, num_branches, branch_point, gate, **backbone_kwargs)


def branch_state_dict(state_dict, branch):
    """The weights of the plain backbone made of the shared trunk and branch `branch`
    (0-based): the branch's keys lose their 'branches.K.' prefix, the gate's are dropped."""
    prefix = f'branches.{branch}.'
    plain = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            plain[key[len(prefix):]] = value
        elif not key.startswith(('branches.', 'gate.')):
            plain[key] = value
    return plain

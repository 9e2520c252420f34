"""The model of DML and KDCL: m independent networks trained side by side (methods/dml.py and
methods/kdcl.py have the objectives), and the ensemble rules a method may choose for its 'ens'
column."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .output import ModelOutput

__all__ = ['Cohort', 'ENSEMBLES']


def mean_probability(logits):
    """The log of the members' mean softmax: logits whose softmax is that mean."""
    log_probs = F.log_softmax(logits.detach(), dim=-1)
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))


def mean_logits(logits):
    return logits.detach().mean(0)


# A method's rule for its 'ens' column (what its accuracy counts), from the members' logits
# (m, B, C); detached: the ensemble is reported, never trained through.
ENSEMBLES = {'mean_probability': mean_probability, 'mean_logits': mean_logits}


class Cohort(nn.Module):
    """m independent networks, each made by network_fn(). forward(x) returns
    ModelOutput(logits (m, B, C), ensemble(logits) (B, C)); x is one batch (B, C, H, W) that
    every network takes, or one view per network (m, B, C, H, W)."""

    def __init__(self, network_fn, num_nets, ensemble=mean_probability):
        super().__init__()
        self.nets = nn.ModuleList(network_fn() for _ in range(num_nets))
        self.ensemble = ensemble

    def forward(self, x):
        views = x if x.dim() == 5 else [x] * len(self.nets)
        return self.combine([net(view) for net, view in zip(self.nets, views, strict=True)])

    def combine(self, logits):
        logits = torch.stack(logits)
        return ModelOutput(logits, self.ensemble(logits))

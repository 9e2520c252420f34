"""DML's model: m independent networks trained side by side (methods/dml.py has the objective
and the alternating update)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .output import ModelOutput

__all__ = ['Cohort']


class Cohort(nn.Module):
    """m independent networks, each made by network_fn(). forward(x) returns
    ModelOutput(logits (m, B, C), log of the mean softmax (B, C))."""

    def __init__(self, network_fn, num_nets):
        super().__init__()
        self.nets = nn.ModuleList(network_fn() for _ in range(num_nets))

    def forward(self, x):
        return self.combine([net(x) for net in self.nets])

    @staticmethod
    def combine(logits):
        logits = torch.stack(logits)
        log_probs = F.log_softmax(logits.detach(), dim=-1)
        return ModelOutput(logits, torch.logsumexp(log_probs, dim=0) - math.log(len(logits)))

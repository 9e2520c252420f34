"""What a model returns: its members' logits, their ensemble, and named extras.

A plain network returns logits (batch, classes), as any classifier does, so that a baseline
or an exported branch stays a standard module. A model of several members (ONE's branches,
CL-ILR's heads, OKDDip's leader and peers, DML's cohort, KD's student with its teacher)
returns a ModelOutput:

    members   (m, batch, classes)  the logits of the networks the method trains
    ensemble  (batch, classes)     their combination (ONE's gate, a mean), or None
    extras    {name: tensor}       anything else its objective reads: OKDDip's attention, KD's
                                   teacher logits, pooled features for a feature-based method

An accuracy column names a part of the output (column_logits): '1'..'m' a member, 'ens' the
ensemble, any other name an extra. So a method declares its columns and its objective reads
the parts by name; the engine treats the output as opaque and never special-cases a method.
"""
from typing import NamedTuple, Optional

import torch

__all__ = ['ModelOutput', 'as_output', 'column_logits', 'column_hits']

TOP_K = 5   # column_hits counts top-1 and top-TOP_K hits


class ModelOutput(NamedTuple):
    members: torch.Tensor
    ensemble: Optional[torch.Tensor] = None
    extras: Optional[dict] = None

    def extra(self, name):
        """The extra called `name`; KeyError naming what the model returned otherwise."""
        if not self.extras or name not in self.extras:
            raise KeyError(f'the model returned no {name!r} (extras: {sorted(self.extras or {})})')
        return self.extras[name]


def as_output(output):
    """A ModelOutput from any model's output: plain logits (batch, classes) are one member."""
    if isinstance(output, ModelOutput):
        return output
    if isinstance(output, torch.Tensor):
        return ModelOutput(output.unsqueeze(0))
    raise TypeError(f'a model must return logits or a ModelOutput, got {type(output).__name__}')


def column_logits(output, column):
    """The logits (batch, classes) an accuracy column names: member '1'..'m', 'ens' or an extra."""
    output = as_output(output)
    if column.isdigit():
        return output.members[int(column) - 1]
    if column == 'ens':
        if output.ensemble is None:
            raise KeyError("column 'ens': the model returned no ensemble")
        return output.ensemble
    return output.extra(column)


def column_hits(output, targets, columns):
    """Hits of each column over the batch, left on the device: shape (2, len(columns)), the
    top-1 hits, then the top-5 (top-k of every class where there are fewer than 5)."""
    logits = torch.stack([column_logits(output, column) for column in columns])
    top = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices       # (columns, B, k)
    hit = top == targets[:, None]
    return torch.stack([hit[..., 0].sum(1), hit.any(-1).sum(1)])

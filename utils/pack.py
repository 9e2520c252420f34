"""Packed runs: k runs of one method and network that differ only by their seed, trained in one
process as one stacked model (--seeds S1 S2 ...; docs/SPEED.md, "Packed runs").

Every parameter and buffer of the k models is stacked along a new first dimension, and one
forward pass, vmapped over that dimension (torch.func), computes all k: a convolution with
stacked weights becomes one grouped convolution, so k small networks fill a GPU that one of
them leaves idle. Each run keeps what makes it a run of its own: its seed (its initial
weights, built from that seed exactly as a run alone builds them), its data order, crops and
flips (its own loader), its BatchNorm statistics (its slice of the stacked buffers) and its
optimizer state (SGD is elementwise, so one optimizer over the stacked tensors is k
independent ones). The losses of the k runs are summed before the backward pass, so no run's
gradient reaches another's weights. Member i's slices are saved as an ordinary run's
checkpoint (member_state_dict, member_optimizer_state), and an ordinary run's checkpoint loads
into slot i.

What a pack cannot hold is refused by the engine (utils/setup.py, check_pack): dropout, which
would draw the k runs' masks from one generator, a step that is not one backward pass over the
summed loss (DML's alternating updates), torchrun, and ImageNet's worker loaders.
"""
import copy

import torch
import torch.nn as nn
from torch.func import functional_call, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from .steps import autocast, objective_kwargs

__all__ = ['Pack', 'PackLoader', 'SharedBatches', 'over_members', 'pack_train_step',
           'member_optimizer_state', 'stack_optimizer_states']


class Pack(nn.Module):
    """k models of one architecture as one module. forward(x) takes a batch per member,
    shape (k, B, ...), and returns the k outputs stacked along a first dimension (a tensor
    or any structure of tensors, as a ModelOutput)."""

    def __init__(self, models):
        super().__init__()
        template = copy.deepcopy(models[0]).to('meta')
        # Not a submodule: only its structure and train/eval mode are used, never its tensors.
        self.__dict__['template'] = template
        params, buffers = dict(template.named_parameters()), dict(template.named_buffers())
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in models]),
                         requires_grad=params[name].requires_grad) for name in params)
        for j, name in enumerate(self.buffer_names):
            self.register_buffer(f'stacked_buffer{j}',
                                 torch.stack([m.get_buffer(name) for m in models]))
        # Each key of one model's state dict -> its stacked tensor; tied weights (a module
        # shared by several parents) appear under several keys and are stacked once.
        index = {id(t): ('param', j) for j, t in enumerate(params.values())}
        index.update({id(t): ('buffer', j) for j, t in enumerate(buffers.values())})
        self.keys = {key: index[id(t)] for key, t in template.state_dict(keep_vars=True).items()}
        self.members = len(models)

    def train(self, mode=True):
        super().train(mode)
        self.template.train(mode)
        return self

    def stacked_tensor(self, kind, j):
        return self.stacked[j] if kind == 'param' else getattr(self, f'stacked_buffer{j}')

    def forward(self, x):
        buffers = [self.stacked_tensor('buffer', j) for j in range(len(self.buffer_names))]
        structure = {}

        def member(params, buffers, x):
            output = functional_call(self.template, (dict(zip(self.param_names, params)),
                                                     dict(zip(self.buffer_names, buffers))), (x,))
            leaves, structure['spec'] = tree_flatten(output)
            structure['absent'] = [leaf is None for leaf in leaves]  # as a ModelOutput's
            return [leaf for leaf in leaves if leaf is not None]     # ensemble may be
        stacked = iter(vmap(member)(list(self.stacked), buffers, x))
        return tree_unflatten([None if absent else next(stacked)
                               for absent in structure['absent']], structure['spec'])

    def member_state_dict(self, i):
        """Member i's weights and buffers under the keys of one model's state_dict()."""
        return {key: self.stacked_tensor(*where)[i].detach().clone()
                for key, where in self.keys.items()}

    @torch.no_grad()
    def load_member_state_dict(self, i, state_dict):
        """Copy one model's state dict into member i (the same keys, strictly)."""
        if set(state_dict) != set(self.keys):
            missing, extra = set(self.keys) - set(state_dict), set(state_dict) - set(self.keys)
            raise RuntimeError(f'state dict does not fit the packed model: missing '
                               f'{sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}')
        for key, where in self.keys.items():
            self.stacked_tensor(*where)[i].copy_(state_dict[key])


def over_members(function, *structures):
    """function(*member_i_structures) for every member i, stacked: vmap over the first
    dimension of every tensor in `structures` (each a tensor, or a structure of tensors that
    may hold None, as a ModelOutput)."""
    flat = [tree_flatten(structure) for structure in structures]
    absent = [[leaf is None for leaf in leaves] for leaves, _ in flat]

    def member(*tensors):
        tensors = iter(tensors)
        return function(*(tree_unflatten([None if a else next(tensors) for a in gaps], spec)
                          for gaps, (_, spec) in zip(absent, flat)))
    return vmap(member)(*(leaf for leaves, _ in flat for leaf in leaves if leaf is not None))


def member_optimizer_state(state, i):
    """Member i's share of an optimizer state dict over a Pack's stacked parameters: what an
    optimizer over one model's parameters holds (the same parameter indices)."""
    return {'state': {index: {name: value[i].clone() if torch.is_tensor(value) and value.dim()
                              else value for name, value in entry.items()}
                      for index, entry in state['state'].items()},
            'param_groups': copy.deepcopy(state['param_groups'])}


def stack_optimizer_states(states):
    """The optimizer state dict over a Pack's parameters from its members' (each an optimizer
    state dict over one model's parameters, as member_optimizer_state gives)."""
    first = states[0]
    stacked = {}
    for index, entry in first['state'].items():
        stacked[index] = {name: torch.stack([s['state'][index][name] for s in states])
                          if torch.is_tensor(value) and value.dim() else value
                          for name, value in entry.items()}
    return {'state': stacked, 'param_groups': copy.deepcopy(first['param_groups'])}


def pack_train_step(model, objective, optimizer, scaler, images, targets, epoch, batch_size,
                    amp, weight=None):
    """One SGD step of every member of a Pack: each member's loss on its own batch, the sum's
    gradient (each member's weights get only their own run's). Returns (the stacked output,
    each member's loss summed over its images, shape (k,))."""
    kwargs = objective_kwargs(batch_size, weight)
    with autocast(amp, images.device):
        output = model(images)
        losses = over_members(lambda out, y: objective(out, y, epoch, **kwargs), output, targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses.sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    return output, losses.detach() * batch_size


class PackLoader:
    """The training batches of k runs, each run's as its seed's loader alone gives them (its
    order, crops and flips), built at once by one DeviceLoader (seeds_batches) and stacked:
    images (k, B, ...), labels (k, B)."""

    skipped = ()

    def __init__(self, loader, seeds):
        self.loader, self.seeds = loader, list(seeds)
        self.labels, self.device = loader.labels, loader.device

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        return self.loader.seeds_batches(self.seeds, epoch, start)


class SharedBatches:
    """One loader's batches given to every member of a pack of k (evaluation: the same test
    images): images expanded to (k, B, ...), labels to (k, B), without copies."""

    def __init__(self, loader, members):
        self.loader, self.members = loader, members
        self.labels, self.device = loader.labels, loader.device
        self.skipped = loader.skipped

    def __len__(self):
        return len(self.loader)

    def batches(self, epoch=0, start=0):
        for images, labels in self.loader.batches(epoch, start):
            yield (images.expand(self.members, *images.shape),
                   labels.expand(self.members, *labels.shape))

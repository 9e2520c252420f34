"""torch.distributed under torchrun: rank bookkeeping and the few collectives we need."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.size > 1

    def all_reduce(self, tensor, op=dist.ReduceOp.SUM):
        if self.distributed:
            dist.all_reduce(tensor, op=op)
        return tensor

    def broadcast_buffers(self, model):
        """Rank 0's BatchNorm running statistics everywhere (before evaluating or saving)."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)


def world_from_env():
    """The torchrun world this process belongs to (a single process without torchrun)."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return World()
    return World(int(os.environ['RANK']), int(os.environ['WORLD_SIZE']),
                 int(os.environ.get('LOCAL_RANK', 0)))


def init_process_group(world, device):
    if world.distributed and not dist.is_initialized():
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        dist.init_process_group(backend, device_id=device if device.type == 'cuda' else None)


def destroy_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()

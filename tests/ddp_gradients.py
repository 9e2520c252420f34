"""Run under torchrun: DDP gradients of a global batch split over ranks must equal the
gradients of the whole batch in one process (BatchNorm in eval mode, so each sample's
output does not depend on which rank holds it). Exits non-zero on a mismatch."""
import os
import sys

import torch

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models import one_resnet  # noqa: E402
from utils.data import DeviceLoader  # noqa: E402
from methods.one import ONELoss  # noqa: E402


def gradients(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def main():
    dist.init_process_group('gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50,))
    objective = ONELoss(temperature=3.0, rampup_epochs=80, distill=True)
    worst = 0.0
    for global_batch in (16, 7):  # 7 gives the ranks unequal shares (4 and 3)
        loader = DeviceLoader(images, labels, (0.5,) * 3, (0.25,) * 3, global_batch,
                              shuffle=True, augment=True, seed=3, rank=rank, world_size=world)
        whole = DeviceLoader(images, labels, (0.5,) * 3, (0.25,) * 3, global_batch,
                             shuffle=True, augment=True, seed=3)
        (x, y), (x_all, y_all) = next(loader.batches(epoch=5)), next(whole.batches(epoch=5))
        torch.manual_seed(1)
        model = one_resnet(8, 10).eval()
        reference = one_resnet(8, 10).eval()
        reference.load_state_dict(model.state_dict())

        ddp = DistributedDataParallel(model)
        objective(ddp(x), y, epoch=40, batch_size=global_batch / world).backward()
        objective(reference(x_all), y_all, epoch=40).backward()
        distributed, single = gradients(model), gradients(reference)
        worst = max(worst, (distributed - single).abs().max().item() / single.abs().max().item())
    if rank == 0:
        print(f'max relative gradient difference {worst:.3g}')
    dist.destroy_process_group()
    sys.exit(0 if worst < 1e-5 else 1)


if __name__ == '__main__':
    main()

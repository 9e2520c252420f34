"""benchmark.py --dataset imagenet: is an ImageNet run bound by its data or by its step?

Side by side, on this machine:
  loader   images/s of the training loader over DIR/train (utils/imagefolder.py: decoding and
           the training transforms in worker processes, then to the device and normalised),
           with 1 worker and with --workers
  step     images/s of the model's training step on images already on the device
and from them the projected time of the recipe's 90 epochs of ILSVRC-2012 (1,281,167
training images) at the slower of the two, on one such device and on 8 (each rank with its
own --workers processes, so assuming 8 x that many CPU cores).
"""
import time
from itertools import islice

import torch

from utils.imagefolder import IMAGENET_MEAN, IMAGENET_STD, FolderLoader, scan, train_transform
from utils.setup import build_model, build_optimizer
from utils.steps import train_step

ILSVRC_TRAIN_IMAGES = 1_281_167
RECIPE_EPOCHS = 90
GPUS_IN_A_NODE = 8


def wait_for(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def loader_rate(args, device, samples, workers):
    """Images/s the training loader delivers on the device over up to --steps batches, after
    the first (which pays for starting the workers)."""
    loader = FolderLoader(samples, train_transform(args.image_size), IMAGENET_MEAN,
                          IMAGENET_STD, args.batch, shuffle=True, device=device,
                          workers=workers, bad_images='skip')
    batches = loader.batches(epoch=0)
    next(batches)
    start, images = time.perf_counter(), 0
    for x, _ in islice(batches, args.steps):
        images += len(x)
    wait_for(device)
    return images / (time.perf_counter() - start) if images else None


def step_rate(args, device, method, config):
    """Images/s of --steps training steps of --batch random images of --image-size."""
    model = build_model(config, method, 1000, device)
    objective, optimizer = method.objective(config), build_optimizer(config, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    x = x.contiguous(memory_format=memory_format)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    model.train()
    for _ in range(args.warmup):
        train_step(model, objective, optimizer, scaler, x, y, 0, args.batch, args.amp)
    wait_for(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        train_step(model, objective, optimizer, scaler, x, y, 0, args.batch, args.amp)
    wait_for(device)
    return args.steps * args.batch / (time.perf_counter() - start)


def hours(rate, devices=1):
    return RECIPE_EPOCHS * ILSVRC_TRAIN_IMAGES / (rate * devices) / 3600


def measure(args, device, name, method, config):
    samples = scan(args.data_dir)[0]['train']   # once: a listing of ILSVRC takes a while
    per_worker = loader_rate(args, device, samples, 1)
    loader = loader_rate(args, device, samples, args.workers) if args.workers != 1 else per_worker
    step = step_rate(args, device, method, config)
    bound = min(loader, step)
    return {'model': name, 'image_size': args.image_size, 'batch': args.batch,
            'loader_img_s_per_worker': per_worker, 'workers': args.workers,
            'loader_img_s': loader, 'step_img_s': step,
            'bound_by': 'data' if loader < step else 'compute',
            'projected_hours_90_epochs': hours(bound),
            f'projected_hours_90_epochs_{GPUS_IN_A_NODE}_devices': hours(bound, GPUS_IN_A_NODE)}


def print_result(r):
    print(f'{r["model"]}: loader {r["loader_img_s_per_worker"]:.1f} img/s with 1 worker, '
          f'{r["loader_img_s"]:.1f} with {r["workers"]}; training step {r["step_img_s"]:.1f} '
          f'img/s ({r["image_size"]}px, batch {r["batch"]}): bound by {r["bound_by"]}', flush=True)
    print(f'  projected {RECIPE_EPOCHS} epochs of ILSVRC-2012: '
          f'{r["projected_hours_90_epochs"]:.1f} h on this device, '
          f'{r[f"projected_hours_90_epochs_{GPUS_IN_A_NODE}_devices"]:.1f} h on '
          f'{GPUS_IN_A_NODE} like it (each rank with {r["workers"]} workers)', flush=True)

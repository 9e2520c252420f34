"""benchmark.py's measurement of one CIFAR model, in the process benchmark.py starts for it
(`--one MODEL`: the result is printed as one line of JSON).

On synthetic 32x32 images, in timed blocks that alternate so that a drift of the machine's
speed hits each alike:
  project       images/s of the engine's train_step fed by the project's device loader (uint8
                images on the device, batched, cropped, flipped and normalised there)
  conventional  the same step fed by torchvision's PIL transforms in DataLoader worker
                processes, the way the original trained
  pack          with --pack K, K runs of the model trained as one pack (pack.py)
and images/s through evaluate(), training FLOPs per image (torch.utils.flop_counter), the peak
memory, and the best matrix-multiply GFLOP/s measured in the same process as the reference.
"""
import resource
import time
from statistics import median

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms
from torchvision.datasets import VisionDataset

from benchmarks.names import method_and_flags
from benchmarks.pack import pack_config, pack_results, pack_stepper
from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.distributed import World
from utils.graphs import GraphedStep
from utils.setup import apply_fast_preset, build_model, build_optimizer
from utils.steps import Meters, evaluate, scorer, train_step


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_gflops(device, repeats, n, dtype=torch.float32, per_repeat=5):
    """Best n x n x n matrix multiply GFLOP/s in `dtype`: the reference limit for dense compute."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(per_repeat):
            a @ b
        synchronize(device)
        rates.append(2 * n ** 3 * per_repeat / (time.perf_counter() - start) / 1e9)
    return max(rates)


# ----------------------------------------------------------------------------- the two pipelines

class InMemoryCIFAR(VisionDataset):
    """CIFAR-like images held in memory and served exactly as torchvision's CIFAR10 serves its
    own: `data` is (N, 32, 32, 3) uint8 (HWC), `targets` a list of ints, and each item is
    Image.fromarray(data[i]) passed through `transform`."""

    def __init__(self, data, targets, transform=None, target_transform=None):
        super().__init__(None, transform=transform, target_transform=target_transform)
        self.data, self.targets = data, targets

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target


def conventional_transform():
    """The original's training transform (torchvision, on PIL images)."""
    return transforms.Compose([transforms.RandomCrop(32, padding=4),
                               transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(),
                               transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])


def conventional_batches(data, targets, batch, workers, device, memory_format):
    """Batches on `device` from a DataLoader over InMemoryCIFAR with the original's transform:
    decoded and augmented per image on the CPU by `workers` processes, collated, then copied
    (pinned and asynchronously on CUDA, as a tuned conventional loop would)."""
    dataset = InMemoryCIFAR(data, list(map(int, targets)), transform=conventional_transform())
    pin = device.type == 'cuda'
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=pin, drop_last=False)
    for x, y in loader:
        x = x.to(device, non_blocking=pin).contiguous(memory_format=memory_format)
        yield x, y.to(device, non_blocking=pin)


def timed_blocks(step, batches, batch, steps, wait, warmup, rewarm=0):
    """Yields the images/s of one block of `steps` steps at a time: `warmup` untimed steps
    come first, and `rewarm` untimed steps before each later block. `wait` blocks until the
    device has finished; nothing else synchronises inside a block."""
    untimed = warmup
    while True:
        for _ in range(untimed):
            step(*next(batches))
        untimed = rewarm
        wait()
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(batches))
        wait()
        yield batch * steps / (time.perf_counter() - start)


def synthetic_cifar(count):
    """`count` random CIFAR-like images and labels, HWC uint8 as CIFAR10.data holds them."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, count)


def flops_per_image(args, model, objective, optimizer, scaler, x, y):
    """Training FLOPs per image of one real step on (x, y), counted as it runs."""
    with FlopCounterMode(display=False) as counter:
        train_step(model, objective, optimizer, scaler, x, y, 40, args.batch, args.amp)
    return counter.get_total_flops() / args.batch


def stepper(args, device, method, model, objective, optimizer, scaler, meters, names):
    """(step(x, y), wait()) for timed_blocks: the engine's training step as --compile and
    --cuda-graphs run it, counted into `meters`, and a wait for the device."""
    train_model = model
    if args.compile:
        train_model = torch.compile(model, mode=None if args.compile_mode == 'default'
                                    else args.compile_mode)
    train_model.train()

    compiled_graphs = args.compile and device.type == 'cuda' and args.compile_mode in (
        'reduce-overhead', 'max-autotune')

    def train_and_count(x, y):
        output, loss_sum = train_step(train_model, objective, optimizer, scaler, x, y, 40,
                                      args.batch, args.amp)
        return loss_sum, method.correct(output, y, names)

    graphed = GraphedStep(train_and_count) if args.cuda_graphs else None

    def step(x, y):
        if compiled_graphs:  # the previous step's graph outputs are no longer read
            torch.compiler.cudagraph_mark_step_begin()
        loss_sum, correct = graphed((), x, y) if graphed else train_and_count(x, y)
        meters.update(loss_sum, correct, len(y))

    def wait():
        meters.count.item()  # waits for the device
    return step, wait


def evaluation_rates(args, model, method, objective, names, test):
    """Images/s of evaluate() over the `test` loader, once per repeat, after one untimed."""
    evaluate(model, test, scorer(method, objective, 40, names), names, World(), args.amp)
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        evaluate(model, test, scorer(method, objective, 40, names), names, World(), args.amp)
        rates.append(args.test_batch * args.steps / (time.perf_counter() - start))
    return rates


def peak_memory(device):
    """Bytes: the most the device held for tensors (CUDA), or this process's peak RSS."""
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(args, device):
    """The model --one names, measured: what benchmark.py prints as its row (and --json)."""
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True  # as utils.setup.setup does for training
    apply_fast_preset(args, device)
    # the method's own defaults (ONE: 3 branches, T = 3, ramp-up 80); lr 0.01 keeps the
    # synthetic data's steps small
    densenet = 'densenet' in args.one
    memory = {'memory_efficient': True} if args.memory_efficient and densenet else {}
    method, config = method_and_flags(args.one, channels_last=args.channels_last,
                                      fast=args.fast, lr=0.01, **memory)
    model = build_model(config, method, 100, device)
    objective = method.objective(config)
    optimizer = build_optimizer(config, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    # One synthetic CIFAR-like set for both pipelines.
    steps = args.warmup + args.steps * args.repeats
    # The two pipelines' blocks alternate, so that a drift of the machine's speed hits both.
    # The batches the workers prepared meanwhile (prefetch_factor 2 each) are used untimed.
    prefetched = 2 * args.workers
    conventional_repeats = args.conventional_repeats
    conventional_steps = (args.warmup + prefetched + args.steps * conventional_repeats
                          + prefetched * (conventional_repeats - 1)) if conventional_repeats else 0
    data, targets = synthetic_cifar(args.batch * max(steps, conventional_steps))
    images = torch.from_numpy(data[:args.batch * steps]).permute(0, 3, 1, 2).contiguous()
    images = images.to(device)
    labels = torch.from_numpy(targets[:args.batch * steps]).to(device)
    loader = DeviceLoader(images, labels, CIFAR_MEAN, CIFAR_STD, args.batch, shuffle=True,
                          augment=True, memory_format=memory_format)
    names = method.columns(config)
    meters = Meters(len(names), device)

    flops = flops_per_image(args, model, objective, optimizer, scaler, *next(loader.batches()))
    step, wait = stepper(args, device, method, model, objective, optimizer, scaler, meters,
                         names)
    project = timed_blocks(step, loader.batches(epoch=1), args.batch, args.steps, wait,
                           warmup=args.warmup)
    if conventional_repeats:
        batches = conventional_batches(data[:args.batch * conventional_steps],
                                       targets[:args.batch * conventional_steps], args.batch,
                                       args.workers, device, memory_format)
        conventional = timed_blocks(step, batches, args.batch, args.steps, wait,
                                    warmup=args.warmup + prefetched, rewarm=prefetched)
    if args.pack:
        pack_step, pack_wait, pack_batches = pack_stepper(args, method, pack_config(args), images,
                                                          labels, device)
        packed = timed_blocks(pack_step, pack_batches, args.pack * args.batch, args.steps,
                              pack_wait, warmup=args.warmup)
    rates, conventional_rates, pack_rates = [], [], []
    for repeat in range(args.repeats):
        rates.append(next(project))
        if repeat < conventional_repeats:
            conventional_rates.append(next(conventional))
        if args.pack:
            pack_rates.append(next(packed))
    if conventional_repeats:
        batches.close()  # ends the worker processes

    test_images = args.test_batch * args.steps
    test = DeviceLoader(images[:test_images], labels[:test_images], CIFAR_MEAN, CIFAR_STD,
                        args.test_batch, shuffle=False, augment=False, memory_format=memory_format)
    eval_rates = evaluation_rates(args, model, method, objective, names, test)

    peak = peak_memory(device)
    train_rate = median(rates)
    conventional_rate = median(conventional_rates) if conventional_rates else None
    # Each conventional block against the project's block just before it, then the median.
    paired = [p / c for p, c in zip(rates, conventional_rates)]
    # The reference is measured here, next to the model's timing: on a shared machine the
    # attainable rate drifts over minutes, and a ratio of two distant timings would too.
    # Under autocast the reference is that dtype's matmul.
    dtype = {'off': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.amp]
    reference = matmul_gflops(device, args.repeats, args.matmul_size, dtype)
    return {'model': args.one, 'train_img_s': train_rate, 'train_img_s_repeats': rates,
            **pack_results(args.pack, rates, pack_rates),
            'conventional_img_s': conventional_rate,
            'conventional_img_s_repeats': conventional_rates,
            'vs_conventional': median(paired) if paired else None,
            'conventional_workers': args.workers,
            'eval_img_s': median(eval_rates),
            'matmul_gflop_s': reference, 'matmul_dtype': str(dtype).replace('torch.', ''),
            'ratio_to_matmul': train_rate * flops / 1e9 / reference,
            'train_gflop_per_img': flops / 1e9,
            'train_gflop_s': train_rate * flops / 1e9,
            'peak_memory_gib': peak / 2 ** 30}

"""Training and evaluation speed of the real training step, against the device's limit.

For each model: images/s through the engine's train_step (augmentation on the device,
forward, ONE objective or cross-entropy, backward, SGD) and through its evaluate(); training
FLOPs per image counted by torch.utils.flop_counter; the achieved GFLOP/s; peak memory; and
that as a fraction of the fp32 matrix-multiply GFLOP/s measured in the same run.

    python benchmark.py                                   # default flags, all four models
    python benchmark.py --channels-last --compile --json bench.json
Each model runs in its own process, so peak memory is that model's alone.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import torch
from torch.utils.flop_counter import FlopCounterMode

from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.distributed import World
from utils.engine import Meters, build_model, evaluate, train_step
from utils.logger import accuracy_columns
from utils.losses import CrossEntropy, ONELoss

MODELS = ['resnet-32', 'one_resnet-32', 'resnet-110', 'one_resnet-110']


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--batch', type=int, default=128, help='training batch')
    p.add_argument('--test-batch', type=int, default=100, help='evaluation batch')
    p.add_argument('--steps', type=int, default=10, help='timed training steps per repeat')
    p.add_argument('--repeats', type=int, default=3,
                   help='timed repeats: the median rate is reported, and the best matmul rate')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--amp', default='off', choices=['off', 'bf16', 'fp16'])
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--json', help='also write the results here')
    p.add_argument('--one', help=argparse.SUPPRESS)  # internal: measure this model, print JSON
    return p.parse_args(argv)


def pick_device(name):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def matmul_gflops(device, repeats, n=4096, per_repeat=5):
    """Best fp32 n x n x n matrix multiply GFLOP/s: the reference limit for dense compute."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
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


def median(values):
    return sorted(values)[len(values) // 2]


def measure(args, device):
    arch, depth = args.one.rsplit('-', 1)
    config = SimpleNamespace(arch=arch, depth=int(depth), num_branches=3 if arch == 'one_resnet' else 1,
                             sync_bn=False, channels_last=args.channels_last)
    model = build_model(config, 100, device)
    objective = ONELoss() if arch == 'one_resnet' else CrossEntropy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == 'fp16')
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    steps = args.warmup + args.steps * args.repeats
    images = torch.randint(0, 256, (args.batch * steps, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 100, (args.batch * steps,), device=device)
    loader = DeviceLoader(images, labels, CIFAR_MEAN, CIFAR_STD, args.batch, shuffle=True,
                          augment=True, memory_format=memory_format)
    names = accuracy_columns(config.num_branches, arch == 'one_resnet')
    meters = Meters(len(names), device)

    x, y = next(loader.batches())
    with FlopCounterMode(display=False) as counter:
        train_step(model, objective, optimizer, scaler, x, y, 40, args.batch, args.amp)
    flops_per_image = counter.get_total_flops() / args.batch

    train_model = torch.compile(model) if args.compile else model
    train_model.train()
    rates, start = [], None
    for step, (x, y) in enumerate(loader.batches(epoch=1)):
        if step >= args.warmup and (step - args.warmup) % args.steps == 0:
            meters.count.item()  # waits for the device
            if start is not None:
                rates.append(args.batch * args.steps / (time.perf_counter() - start))
            start = time.perf_counter()
        output, loss_sum = train_step(train_model, objective, optimizer, scaler, x, y, 40,
                                      args.batch, args.amp)
        meters.update(loss_sum, output, y)
    meters.count.item()
    rates.append(args.batch * args.steps / (time.perf_counter() - start))

    test = DeviceLoader(images[:args.test_batch * args.steps], labels[:args.test_batch * args.steps],
                        CIFAR_MEAN, CIFAR_STD, args.test_batch, shuffle=False, augment=False,
                        memory_format=memory_format)
    evaluate(model, test, objective, 40, names, World(), args.amp)  # warm-up
    eval_rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        evaluate(model, test, objective, 40, names, World(), args.amp)
        eval_rates.append(args.test_batch * args.steps / (time.perf_counter() - start))

    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    train_rate = median(rates)
    # The reference is measured here, next to the model's timing: on a shared machine the
    # attainable rate drifts over minutes, and a ratio of two distant timings would too.
    reference = matmul_gflops(device, args.repeats)
    return {'model': args.one, 'train_img_s': train_rate, 'eval_img_s': median(eval_rates),
            'matmul_gflop_s': reference, 'ratio_to_matmul': train_rate * flops_per_image / 1e9 / reference,
            'train_gflop_per_img': flops_per_image / 1e9,
            'train_gflop_s': train_rate * flops_per_image / 1e9,
            'peak_memory_gib': peak / 2 ** 30}


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.one:
        print(json.dumps(measure(args, device)))
        return 0

    flags = list(sys.argv[1:] if argv is None else argv)
    rows = []
    for name in args.models:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), *flags, '--one', name],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row['eval_over_train'] = row['eval_img_s'] / row['train_img_s']
        rows.append(row)

    cpu = platform.processor() or platform.machine()
    described = (torch.cuda.get_device_name(device) if device.type == 'cuda'
                 else f'{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads')
    print(f'device: {described}; torch {torch.__version__}; batch {args.batch}; '
          f'channels_last={args.channels_last} compile={args.compile} amp={args.amp}')
    print('reference: best fp32 4096^3 matmul GFLOP/s, measured in each model\'s process')
    header = (f'{"model":<15}{"train img/s":>12}{"eval img/s":>12}{"eval/train":>11}'
              f'{"GFLOP/img":>10}{"GFLOP/s":>9}{"matmul":>8}{"of matmul":>10}{"peak GiB":>9}')
    print(header)
    for r in rows:
        print(f'{r["model"]:<15}{r["train_img_s"]:>12.1f}{r["eval_img_s"]:>12.1f}'
              f'{r["eval_over_train"]:>10.1f}x{r["train_gflop_per_img"]:>10.3f}'
              f'{r["train_gflop_s"]:>9.1f}{r["matmul_gflop_s"]:>8.1f}{r["ratio_to_matmul"]:>9.0%}'
              f' {r["peak_memory_gib"]:>8.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'device': described, 'torch': torch.__version__, 'flags': vars(args),
                       'results': rows}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())

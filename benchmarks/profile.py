"""Where a training step's time goes: torch.profiler over the real step, its kernels (on CUDA;
the operators on the CPU) sorted into kinds by name.

    python -m benchmarks.profile --models resnet-32 one_resnet-32 --device cuda
    python -m benchmarks.profile --models one_resnet-32 --amp bf16 --channels-last --json p.json

For each model: kernels per step, milliseconds per step, and the time per kind: convolution
(forward and backward), BatchNorm, elementwise, reductions and the loss, the optimizer, the
augmentation and copies, the rest; then the same for one evaluation batch. The step is the
engine's (utils/steps.train_step on the project's device loader), run eagerly: under a CUDA
graph the profiler sees one replay, not its kernels, so `--cuda-graphs` adds only the graphed
step's milliseconds beside the eager ones. Kinds are read from kernel and operator names,
which differ between GPUs and libraries: `other` holds what no pattern names.
"""
import argparse
import json
import re
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

# (kind, pattern over a kernel's or operator's name, lower case), the first match wins.
KINDS = (
    ('optimizer', r'sgd|multi_tensor|foreach'),
    ('batchnorm', r'batch_norm|batchnorm|bn_fw|bn_bw|bn_|welford'),   # before cudnn's convs
    ('convolution backward', r'conv.*(backward|bwd|dgrad|wgrad)|(dgrad|wgrad)'),
    ('convolution', r'conv|implicit_gemm|cudnn|winograd|xmma|sm\d+_xmma|gemm'),
    ('loss and softmax', r'log_softmax|softmax|nll|cross_entropy|kl_div'),
    ('augmentation and copies', r'index|gather|scatter|pad|copy|memcpy|memset|cat|stack|'
                                r'permute|contiguous|fill'),
    ('reduction', r'reduce|sum|mean|max|min|topk|sort'),
    ('elementwise', r'elementwise|vectorized|unrolled|add|mul|div|relu|threshold|where|exp|'
                    r'clamp|sub|neg|pow'),
)
OTHER = 'other'


def kind_of(name):
    name = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, name)), OTHER)


def device_events(prof, device):
    """(name, microseconds) of every kernel (CUDA) or leaf operator (CPU) the profile holds."""
    if device.type == 'cuda':
        return [(e.name, e.device_time) for e in prof.events()
                if e.device_type == torch.autograd.DeviceType.CUDA]
    return [(e.name, e.self_cpu_time_total) for e in prof.events()
            if e.name.startswith('aten::') and e.self_cpu_time_total > 0]


def breakdown(events, steps):
    """{'kernels per step', 'ms per step', 'kinds': {kind: ms per step}} of profiled steps."""
    kinds = {}
    for name, micros in events:
        kind = kind_of(name)
        kinds[kind] = kinds.get(kind, 0.0) + micros / 1000 / steps
    return {'kernels per step': len(events) / steps, 'ms per step': sum(kinds.values()),
            'kinds': dict(sorted(kinds.items(), key=lambda item: -item[1]))}


def profiled(function, steps, device):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            function()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    return breakdown(device_events(prof, device), steps)


def wall_ms(function, steps, device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        function()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000 / steps


def synthetic_batches(device, batch, channels_last, count=2048):
    """Endless batches of the device loader over random CIFAR-sized uint8 images."""
    from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 100, (count,), generator=generator)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loader = DeviceLoader(images.to(device), labels.to(device), CIFAR_MEAN, CIFAR_STD, batch,
                          shuffle=True, augment=True, memory_format=memory_format)
    epoch = 0
    while True:
        for images, labels in loader.batches(epoch):
            if len(labels) == batch:
                yield images, labels
        epoch += 1


def profile_model(name, args, device):
    """The breakdown of one model's training step and evaluation batch."""
    from benchmarks.names import method_and_flags
    from utils.graphs import GraphedStep
    from utils.setup import build_model, build_optimizer
    from utils.steps import autocast, train_step
    method, flags = method_and_flags(name, amp=args.amp, channels_last=args.channels_last,
                                     fast=False, train_batch=args.batch)
    model = build_model(flags, method, 100, device)
    optimizer = build_optimizer(flags, model, device)
    objective = method.objective(flags)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    batches = synthetic_batches(device, args.batch, flags.channels_last)
    images, targets = next(batches)
    columns = method.columns(flags)

    def step(images=None, targets=None):
        """The engine's step on the next batch of the device loader (its augmentation
        included), or on the given one (a CUDA graph's inputs)."""
        if images is None:
            images, targets = next(batches)
        output, loss = train_step(model, objective, optimizer, scaler, images, targets, 40,
                                  args.batch, args.amp)
        return loss, method.correct(output, targets, columns)

    @torch.inference_mode()
    def evaluate():
        with autocast(args.amp, device):
            model(images)
    model.train()
    for _ in range(args.warmup):
        step()
    result = {'model': name, 'device': str(device), 'amp': args.amp,
              'channels_last': flags.channels_last, 'batch': args.batch,
              'train': profiled(step, args.steps, device)}
    result['train']['wall ms per step'] = wall_ms(step, args.steps, device)
    if args.cuda_graphs and device.type == 'cuda':
        graphed = GraphedStep(step)
        for _ in range(4):
            graphed('step', images, targets)
        result['train']['graphed wall ms per step'] = wall_ms(
            lambda: graphed('step', images, targets), args.steps, device)
    model.eval()
    result['evaluation'] = profiled(evaluate, args.steps, device)
    return result


def print_result(r):
    for part in ('train', 'evaluation'):
        b = r[part]
        extra = ''.join(f', {key} {b[key]:.2f}' for key in ('wall ms per step',
                                                            'graphed wall ms per step')
                        if key in b)
        print(f'{r["model"]} {part} ({r["amp"]}, channels_last {r["channels_last"]}, batch '
              f'{r["batch"]}): {b["kernels per step"]:.0f} kernels per step, '
              f'{b["ms per step"]:.2f} ms of them{extra}')
        for kind, ms in b['kinds'].items():
            print(f'    {kind:<26} {ms:8.3f} ms  {100 * ms / b["ms per step"]:5.1f}%')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', nargs='+', default=['resnet-32', 'one_resnet-32'])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--amp', default='off', choices=['off', 'bf16'])
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=False)
    p.add_argument('--cuda-graphs', action='store_true',
                   help='also time the step replayed as a CUDA graph (CUDA only)')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--json', default=None, help='write the breakdowns here')
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    results = [profile_model(name, args, device) for name in args.models]
    for r in results:
        print_result(r)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Speed of the real training step, against the device's limit and a conventional pipeline.

For each model: images/s through the engine's train_step fed by the project's input pipeline
(uint8 images on the device, batched, cropped, flipped and normalised there), and fed by a
conventional one (torchvision's PIL transforms in DataLoader worker processes, the way the
original trained) running the same model, objective and optimizer step: the ratio of the two
is `vs conventional`. Also: images/s through evaluate(); training FLOPs per image counted by
torch.utils.flop_counter; the achieved GFLOP/s; peak memory; and that as a fraction of the
matrix-multiply GFLOP/s measured in the same process.

    python benchmark.py                                     # default flags, the paper's four models
    python benchmark.py --models one_resnet-32 --fast --json bench.json
    python benchmark.py --models resnet-8 --steps 2 --repeats 1   # a quick check (depth 6n+2)
    python benchmark.py --models densenet-190 one_densenet-190 --memory-efficient
    python benchmark.py --dataset imagenet --data-dir /data/imagenet --workers 8   # data vs step
    python benchmark.py --models one_resnet-32 --fast --pack 8   # 8 runs as one pack, beside one
Models are ARCH-DEPTH: a plain network (resnet, resnext, densenet, wrn, vgg) as the baseline
trains it, or ONE over it (one_resnet: the seed's layout; one_resnext, one_densenet, ...),
each with its paper's width (ResNeXt 8x64d, DenseNet-BC k = 40, WRN k = 10).
Each model runs in its own process, so peak memory is that model's alone (with --pack, the
pack's too). --pack K also trains K runs of the model (seeds 0 to K-1) as one pack, as
cifar_*.py --seeds trains them (benchmarks/pack.py), its timed blocks alternating with the run
alone's: its img/s counts every run's images, per run is that over K, and `vs solo` is the
median over adjacent pairs of blocks of (pack img/s) / (solo img/s).
With --dataset imagenet the models are torchvision's (resnet18, one_resnet18, resnet50, ...)
and benchmarks/imagenet.py measures the JPEG loader against the training step instead.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import torch

from benchmarks import cifar, imagenet
from benchmarks.names import method_and_flags
from benchmarks.pack import pack_method_and_flags, pack_refusal
from methods import METHODS
from models import IMAGENET_NETWORKS
from utils.atomic import write_json_atomic
from utils.cli import Parser
from utils.errors import UserError, one_line_errors
from utils.setup import apply_fast_preset, cpu_name

MODELS = ['resnet-32', 'one_resnet-32', 'resnet-110', 'one_resnet-110']
IMAGENET_MODELS = ['one_resnet18']
COMPILE_MODES = ['default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs']
EXIT_FAILED, EXIT_USAGE = 1, 2


class BenchmarkError(UserError):
    """A request the benchmark cannot carry out, or a failed measurement: printed as one line,
    exit status `status` (2: a bad request, refused before measuring; 1: a measurement failed)."""


def cpu_count():
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def model_name(text):
    """'ARCH-DEPTH' of a CIFAR network the baseline or ONE trains, at a depth it can build,
    or the name of one of torchvision's ImageNet networks, 'one_' in front for ONE's."""
    match = re.fullmatch(r'([a-z_]+)-(\d+)', text)
    plain = tuple(a for a in METHODS['baseline'].archs if a not in IMAGENET_NETWORKS)
    archs = plain + tuple(f'one_{a}' for a in plain)
    torchvision = tuple(IMAGENET_NETWORKS) + tuple(f'one_{a}' for a in IMAGENET_NETWORKS)
    if text not in torchvision and (not match or match.group(1) not in archs):
        raise argparse.ArgumentTypeError(f'{text!r} is neither ARCH-DEPTH with ARCH one of '
                                         f'{", ".join(archs)} nor one of {", ".join(torchvision)}')
    try:
        method_and_flags(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(f'{text}: {e}') from None
    return text


def parse(argv=None):
    p = Parser(description=__doc__.splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--models', nargs='+', type=model_name, default=MODELS, metavar='ARCH-DEPTH',
                   help='e.g. resnet-32, one_resnet-110, resnext-29, one_densenet-190, wrn-28, '
                        'vgg-16 (ONE over a network: one_ARCH)')
    p.add_argument('--memory-efficient', action='store_true',
                   help="DenseNet models: recompute the dense blocks' concatenations in the "
                        'backward pass (less memory, more time)')
    p.add_argument('--dataset', default='cifar', choices=['cifar', 'imagenet'],
                   help="cifar: synthetic 32x32 images on the device; imagenet: the JPEG "
                        "loader over --data-dir's train/ against the training step")
    p.add_argument('--data-dir', help='--dataset imagenet: the ImageFolder root')
    p.add_argument('--image-size', type=int, default=224, help='--dataset imagenet: crop size')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--batch', type=int, default=128, help='training batch')
    p.add_argument('--test-batch', type=int, default=None,
                   help='evaluation batch (default: 100; 1000 under --fast on CUDA)')
    p.add_argument('--steps', type=int, default=10, help='timed training steps per repeat')
    p.add_argument('--repeats', type=int, default=3,
                   help='timed repeats: the median rate is reported, and the best matmul rate')
    p.add_argument('--warmup', type=int, default=3, help='untimed steps first')
    p.add_argument('--conventional-repeats', type=int, default=None,
                   help='timed repeats of --steps steps through the conventional pipeline, each '
                        "right after one of the project's (default: --repeats; 0: skip it); "
                        'vs conventional is the median of the ratios of these pairs')
    p.add_argument('--workers', type=int, default=min(4, cpu_count()),
                   help="the conventional pipeline's DataLoader worker processes (the original's "
                        '-j default was 4; here min(4, CPU cores))')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--cuda-graphs', action='store_true',
                   help='replay the training step as a CUDA graph (on under --fast on CUDA)')
    p.add_argument('--compile-mode', default='default', choices=COMPILE_MODES,
                   help="torch.compile's mode with --compile ('reduce-overhead': CUDA graphs)")
    p.add_argument('--amp', default='off', choices=['off', 'bf16', 'fp16'])
    p.add_argument('--fast', action='store_true',
                   help="the training scripts' --fast preset (on CUDA: bf16, channels_last, "
                        'fused SGD, CUDA graphs, test batch 1000; on the CPU: channels_last)')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    p.add_argument('--matmul-size', type=int, default=4096,
                   help='n of the n x n x n matrix multiply measured as the reference')
    p.add_argument('--pack', type=int, default=0, metavar='K',
                   help='also measure K runs of each model trained as one pack (--seeds), '
                        'beside the run alone (0: not)')
    p.add_argument('--json', help='also write the results here')
    p.add_argument('--one', help=argparse.SUPPRESS)  # internal: measure this model, print JSON
    args = p.parse_args(argv)
    if args.conventional_repeats is None:
        args.conventional_repeats = args.repeats
    if args.dataset == 'imagenet' and args.models == MODELS:
        args.models = IMAGENET_MODELS
    return args


def pick_device(name):
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise BenchmarkError('--device cuda: no CUDA GPU is available on this machine '
                             f'(torch {torch.__version__}); use --device cpu')
    return torch.device(name)


def check_args(args):
    """Refuse what would fail later, before minutes of measuring."""
    for flag, value, least in (('--batch', args.batch, 2), ('--test-batch', args.test_batch or 1, 1),
                               ('--steps', args.steps, 1), ('--repeats', args.repeats, 1),
                               ('--warmup', args.warmup, 0), ('--workers', args.workers, 0),
                               ('--conventional-repeats', args.conventional_repeats, 0),
                               ('--threads', args.threads, 0), ('--matmul-size', args.matmul_size, 1)):
        if value < least:
            why = ' (BatchNorm needs 2 images to train)' if flag == '--batch' else ''
            raise BenchmarkError(f'{flag} must be at least {least}{why}, got {value}')
    if args.cuda_graphs and args.compile:
        raise BenchmarkError('--cuda-graphs and --compile: choose one (for compiled graphs use '
                             '--compile --compile-mode reduce-overhead)')
    if args.conventional_repeats > args.repeats:
        raise BenchmarkError(f'--conventional-repeats {args.conventional_repeats} is more than '
                             f'--repeats {args.repeats}: each is paired with one of the project\'s')
    torchvision = [m for m in args.models if '-' not in m]
    if args.dataset == 'imagenet':
        if not args.data_dir:
            raise BenchmarkError('--dataset imagenet needs --data-dir, the ImageFolder root')
        if len(torchvision) < len(args.models):
            raise BenchmarkError(f'--dataset imagenet measures torchvision\'s networks '
                                 f'({", ".join(IMAGENET_MODELS)}, ...), not '
                                 f'{next(m for m in args.models if "-" in m)}')
        if args.image_size < 32:
            raise BenchmarkError(f'--image-size must be at least 32, got {args.image_size}')
    elif torchvision:
        raise BenchmarkError(f'{torchvision[0]} is an ImageNet network: add --dataset imagenet '
                             '--data-dir DIR')
    if args.pack:
        refusal = pack_refusal(args, [(model, *pack_method_and_flags(args, model))
                                      for model in args.models])
        if refusal:
            raise BenchmarkError(refusal)
    if args.json:
        check_writable_file(args.json)


def check_writable_file(path):
    """The folder of `path` exists and takes a file (probed with a real one), and `path` is
    not a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise BenchmarkError(f'--json {path}: is a folder; give a file name')
    if not os.path.isdir(folder):
        raise BenchmarkError(f'--json {path}: folder {folder} does not exist')
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.benchmark-', suffix='.tmp'):
            pass
    except OSError as e:
        raise BenchmarkError(f'--json {path}: cannot write into {folder}: {e.strerror or e}') from None


def write_json(path, payload):
    try:
        write_json_atomic(path, payload)
    except UserError as e:
        raise BenchmarkError(f'--json: {e}', EXIT_FAILED) from None


# ----------------------------------------------------------------------------- the parent

def failure_reason(returncode, stderr):
    """One line saying why a measuring process failed: the exception its last traceback ends
    with, else its last line of output, or the signal that ended it."""
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ''
        hint = ' (out of memory?)' if returncode == -signal.SIGKILL else ''
        return f'killed by signal {-returncode} {name}{hint}'.replace('  ', ' ')
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return f'exited with status {returncode} and no message'
    starts = [i for i, line in enumerate(lines) if line.startswith('Traceback (most recent call last)')]
    if not starts:
        return ' '.join(lines[-1].split())[:500]
    # The last traceback's exception: its first unindented line after the frames, and the
    # lines of its message that follow.
    message = lines[starts[-1] + 1:]
    while message and message[0][:1].isspace():
        message.pop(0)
    return ' '.join(' '.join(message).split())[:500] or f'exited with status {returncode}'


def measure_in_child(flags, name):
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *flags, '--one', name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchmarkError(f'measuring {name} failed: {failure_reason(proc.returncode, proc.stderr)}',
                             EXIT_FAILED)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise BenchmarkError(f'measuring {name} printed no result: '
                             f'{failure_reason(1, proc.stderr)}', EXIT_FAILED) from None


def describe_device(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_name()}, {cpu_count()} cores, {torch.get_num_threads()} torch threads'


def print_header(args, described):
    compile_flag = f'{args.compile}' + (f' ({args.compile_mode})' if args.compile else '')
    compile_flag += f' cuda_graphs={args.cuda_graphs}'
    dtype = {'off': 'fp32', 'bf16': 'bf16', 'fp16': 'fp16'}[args.amp]
    print(f'device: {described}; torch {torch.__version__}; batch {args.batch}; '
          f'channels_last={args.channels_last} compile={compile_flag} amp={args.amp}'
          + (' (--fast)' if args.fast else ''))
    print(f'reference: best {dtype} {args.matmul_size}^3 matmul GFLOP/s, measured in each '
          "model's process")
    print('conventional: torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor '
          f'+ Normalize on PIL images, DataLoader with {args.workers} worker process(es), then '
          'the same training step, its timed blocks alternating with the project\'s; vs '
          'conventional = median over the pairs of adjacent blocks of their ratio')
    if args.pack:
        print(f'pack: {args.pack} runs of the model (seeds 0-{args.pack - 1}) as one stacked '
              'model (--seeds), contiguous layout, its timed blocks alternating with the run '
              "alone's; pack img/s counts every run's images, per run = pack img/s / "
              f'{args.pack}; vs solo = median over the pairs of adjacent blocks of their ratio')
    pack = f'{"pack img/s":>12}{"per run":>10}{"vs solo":>9}' if args.pack else ''
    print(f'{"model":<16}{"train img/s":>12}{"conv. img/s":>12}{"vs conventional":>16}'
          f'{"eval img/s":>11}{"eval/train":>11}{"GFLOP/img":>10}{"GFLOP/s":>9}{"matmul":>8}'
          f'{"of matmul":>10}{"peak GiB":>9}{pack}', flush=True)


def print_row(r):
    conventional = (f'{r["conventional_img_s"]:>12.1f}{r["vs_conventional"]:>15.2f}x'
                    if r['conventional_img_s'] else f'{"-":>12}{"-":>16}')
    print(f'{r["model"]:<16}{r["train_img_s"]:>12.1f}{conventional}{r["eval_img_s"]:>11.1f}'
          f'{r["eval_over_train"]:>10.1f}x{r["train_gflop_per_img"]:>10.3f}'
          f'{r["train_gflop_s"]:>9.1f}{r["matmul_gflop_s"]:>8.1f}{r["ratio_to_matmul"]:>9.0%}'
          f' {r["peak_memory_gib"]:>8.2f}{pack_columns(r)}', flush=True)


def pack_columns(r):
    """The row's --pack columns: the pack's img/s, per run, and against the run alone."""
    if not r.get('pack'):
        return ''
    return (f'{r["pack_train_img_s"]:>12.1f}{r["pack_per_run_img_s"]:>10.1f}'
            f'{r["pack_vs_solo"]:>8.2f}x')


def run(args, argv):
    device = pick_device(args.device)
    if not args.one:
        check_args(args)
        if args.cuda_graphs and device.type != 'cuda':
            raise BenchmarkError('--cuda-graphs needs a CUDA GPU (this run is on the CPU)')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(cifar.measure(args, device)))
        return 0
    apply_fast_preset(args, device)  # for the header; each child applies it again
    if args.dataset == 'imagenet':
        return run_imagenet(args, device)
    flags = list(sys.argv[1:] if argv is None else argv)
    print_header(args, describe_device(device))
    rows = []
    for name in args.models:  # each row as it is measured: a failure keeps the earlier ones
        row = measure_in_child(flags, name)
        row['eval_over_train'] = row['eval_img_s'] / row['train_img_s']
        print_row(row)
        rows.append(row)
    write_results(args, device, rows)
    return 0


def write_results(args, device, rows):
    """--json: the device, torch, the flags and one result per model."""
    if args.json:
        write_json(args.json, {'device': describe_device(device), 'torch': torch.__version__,
                               'flags': {k: v for k, v in vars(args).items() if k != 'one'},
                               'results': rows})


def run_imagenet(args, device):
    """The loader against the step, model by model, in this process."""
    print(f'device: {describe_device(device)}; torch {torch.__version__}; data {args.data_dir}; '
          f'amp={args.amp} channels_last={args.channels_last}' + (' (--fast)' if args.fast else ''),
          flush=True)
    rows = []
    for name in args.models:
        method, config = method_and_flags(name, channels_last=args.channels_last,
                                          fast=args.fast, train_batch=args.batch,
                                          image_size=args.image_size)
        row = imagenet.measure(args, device, name, method, config)
        imagenet.print_result(row)
        rows.append(row)
    write_results(args, device, rows)
    return 0


def main(argv=None):
    args = parse(argv)
    threads = torch.get_num_threads()
    try:
        return one_line_errors('benchmark.py', lambda: run(args, argv))
    finally:  # called from Python (the tests), the caller's thread count is left as it was
        torch.set_num_threads(threads)


if __name__ == '__main__':
    sys.exit(main())

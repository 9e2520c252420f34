"""Command-line flags every entry script shares (the original's names), plus the method's."""
import argparse
import math

from .data import LOADERS, UNOFFICIAL_FLAG
from .errors import Parser
from .imagefolder import BAD_IMAGES, IMAGENET

# --dataset imagenet's defaults under every method: the standard ResNet recipe (He et al.
# 2016, as pytorch/examples trains it): 90 epochs, SGD momentum 0.9, weight decay 1e-4,
# LR / 10 at epochs 30 and 60, batch 256 at LR 0.1, the LR scaled linearly with the global
# batch (Goyal et al. 2017). Flags given on the command line win. (The network's default,
# -a resnet18, comes with the network flags: methods/networks.py.)
IMAGENET_RECIPE = {'epochs': 90, 'train_batch': 256, 'lr': None, 'schedule': [30, 60],
                   'gamma': 0.1, 'momentum': 0.9, 'weight_decay': 1e-4}
REFERENCE_BATCH, REFERENCE_LR = 256, 0.1

# args.json keys that do not change what a run trains: report.py groups runs without them, and
# a run may continue with other values (amp included: its rounding is ignored). `run_id` names
# the run (utils/run_folder.py); `start_epoch` is kept from a run's first command. A method
# adds its own (Method.bookkeeping). `unofficial_data` only permits a copy of the data: the
# copy itself is recorded as `data_copy` (utils/setup.py), which is training data, not
# bookkeeping (report.py never averages runs on different copies); `device_name` and
# `torch_version` say where the last command ran.
BOOKKEEPING = frozenset({
    'method', 'manualSeed', 'seed', 'run_id', 'checkpoint', 'resume', 'data_dir', 'gpu_id',
    'device', 'workers', 'overwrite', 'evaluate', 'compile', 'cuda_graphs', 'channels_last',
    'sync_bn', 'tensorboard', 'start_epoch', 'fast', 'amp', 'test_batch',
    'print_freq', 'log_interval', 'threads', 'progress', 'quiet', 'verbose', 'rewind',
    'deterministic', 'check_only', 'bad_images', 'save_every_minutes', 'seeds', 'unofficial_data',
    'device_name', 'torch_version',
})  # init_from is not: a fork never merges with runs from scratch


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help: the method's usage text as written, each flag with its default."""


def build_parser(description, method):
    p = Parser(description=description, formatter_class=HelpFormatter)
    p.add_argument('-d', '--dataset', default='cifar10', choices=sorted([*LOADERS, IMAGENET]),
                   help='imagenet: the ImageFolder layout DIR/train/CLASS/*.JPEG and '
                        'DIR/val/CLASS/*.JPEG, with its own defaults (docs/IMAGENET.md)')
    p.add_argument('--data-dir', default='./data',
                   help='where datasets are found or downloaded by torchvision')
    p.add_argument(UNOFFICIAL_FLAG, action='store_true',
                   help="CIFAR: train on a copy in --data-dir whose checksums are not the "
                        "official release's (rebuilt or re-packaged); its sha256 is recorded in "
                        'args.json (data_copy) and report.py marks its runs. Without it such a '
                        'copy is refused')
    p.add_argument('-j', '--workers', default=4, type=int,
                   help='ImageNet: loader processes decoding JPEGs (per rank); the other '
                        'datasets build their batches on the device and use none')
    p.add_argument('--image-size', default=224, type=int,
                   help='ImageNet: the side of the training crop and of the centre crop '
                        'evaluated (resized to size * 256 / 224 first)')
    p.add_argument('--bad-images', default='stop', choices=BAD_IMAGES,
                   help='ImageNet: an image that cannot be read stops the run naming it '
                        '(stop), or is left out and counted (skip)')
    p.add_argument('--epochs', default=300, type=int, help='total epochs to run')
    p.add_argument('--start-epoch', default=0, type=int,
                   help='epoch to start at (0-based; LR and ramp-up follow it); '
                        '--resume overrides it')
    p.add_argument('--train-batch', default=128, type=int,
                   help='global training batch size (shared over torchrun ranks)')
    p.add_argument('--test-batch', default=None, type=int,
                   help='test batch size (default: 100, the original\'s; 1000 under --fast on CUDA)')
    p.add_argument('--lr', '--learning-rate', default=0.1, type=float, dest='lr')
    p.add_argument('--drop', '--dropout', default=None, type=float, dest='drop',
                   help="dropout ratio (default: the network's, 0 but in the OKDDip-code VGG's "
                        "branches): Wide ResNets and the OKDDip code's VGG only (the other "
                        'networks have none, so only 0 is valid there)')
    p.add_argument('--schedule', type=int, nargs='+', default=[151, 225],
                   help='0-based epochs at which the LR is multiplied by --gamma')
    p.add_argument('--gamma', type=float, default=0.1, help='LR multiplier at each milestone')
    p.add_argument('--momentum', default=0.9, type=float)
    p.add_argument('--nesterov', action=argparse.BooleanOptionalAction, default=False,
                   help="Nesterov momentum (each method's default is its paper's)")
    p.add_argument('--weight-decay', '--wd', default=1e-4, type=float, dest='weight_decay')
    p.add_argument('-c', '--checkpoint', default=None,
                   help='run folder (default: checkpoints/DATASET/ARCH-DEPTH)')
    p.add_argument('--resume', default='', metavar='PATH',
                   help="continue the run that checkpoint PATH belongs to, in PATH's folder "
                        "(-c may name that folder, no other); 'auto': the run folder's "
                        'checkpoint.pth.tar if there is one, else start a new run')
    p.add_argument('--rewind', action='store_true',
                   help='allow --resume PATH to step a run back to a checkpoint older than '
                        'its checkpoint.pth.tar (e.g. model_best.pth.tar); the newer files are '
                        'moved into RUN/previous-YYYYmmdd-HHMMSS/')
    p.add_argument('--init-from', default=None, metavar='PATH',
                   help="start a NEW run in -c from checkpoint PATH's weights only (same "
                        'model flags; epoch --start-epoch, fresh optimizer, empty history); '
                        "PATH's folder is never written")
    p.add_argument('--overwrite', action='store_true',
                   help="start a new run in a run folder that holds one; the old run's files "
                        'are moved into RUN/previous-YYYYmmdd-HHMMSS/')
    method.add_network_flags(p)  # -a, --depth and the networks' own flags
    method.add_flags(p)
    p.add_argument('--manualSeed', type=int, default=None, help='random seed')
    p.add_argument('--seeds', type=int, nargs='+', default=None, metavar='S',
                   help='train one run per seed as one pack: one stacked model in one process '
                        "(utils/pack.py), each run in its own folder, -c's {seed} filled in "
                        '(default: -c/seedS); every run equals the run its seed trains alone. '
                        'In the contiguous layout, one process, no dropout (docs/SPEED.md). One '
                        'seed: one run, in its folder')
    p.add_argument('-e', '--evaluate', action='store_true',
                   help='only evaluate the --resume checkpoint on the test set')
    p.add_argument('--gpu-id', default=None, type=str, help='CUDA device index to use')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--train-subset', type=int, default=0, metavar='N',
                   help='train on the first N training images only (0: all)')
    p.add_argument('--sync-bn', action='store_true',
                   help='synchronised BatchNorm across torchrun ranks')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='NHWC memory layout (same mathematics; faster convolutions on CPU and '
                        'on tensor-core GPUs)')
    p.add_argument('--compile', action='store_true', help='torch.compile the training model')
    p.add_argument('--cuda-graphs', action='store_true',
                   help='record the training step as a CUDA graph and replay it (one GPU, one '
                        'process; on under --fast there)')
    p.add_argument('--amp', default='off', choices=['off', 'bf16', 'fp16'],
                   help='autocast mixed precision (fp16 uses a gradient scaler)')
    p.add_argument('--fast', action='store_true',
                   help='the numerically safe speed preset: on CUDA bf16 autocast, TF32, '
                        'channels_last, fused SGD, CUDA graphs (one process) and a test batch '
                        'of 1000; on the CPU channels_last')
    p.add_argument('--deterministic', action='store_true',
                   help='bitwise-repeatable CUDA runs (a resumed run equals an uninterrupted '
                        'one): deterministic kernels, no cuDNN autotuning; slower')
    p.add_argument('--save-every-minutes', type=float, default=0, metavar='M',
                   help='also save the exact step into checkpoint.pth.tar every M minutes '
                        'within an epoch, so a crash loses minutes, not an epoch (0: at the end '
                        'of each epoch only; a preemption signal always saves the step)')
    p.add_argument('--tensorboard', action='store_true',
                   help='also write TensorBoard event files into RUN/tensorboard (rank 0)')
    p.add_argument('--check-only', action='store_true',
                   help='check everything a run checks before its first write (flags, data, '
                        'the checkpoint it would continue), say what it would do, and exit 0: '
                        'nothing is trained or written into the run folder; a missing dataset '
                        'is downloaded as a run would. Runs on the CPU: checks of this '
                        "machine's GPUs are left to the run. sweep.py checks every run this way "
                        'before it submits any')
    return p


def parse_flags(parser, argv=None):
    """Parse the command line; on --dataset imagenet with IMAGENET_RECIPE's defaults and the
    parser's own for that dataset (the given flags still win) and, unless --lr is given, LR
    0.1 * global batch / 256. Every number flag (the method's and the network's too) must be
    finite: float() reads 'nan' and 'inf', which no flag means."""
    args = parser.parse_args(argv)
    if args.dataset == IMAGENET:
        parser.set_defaults(**IMAGENET_RECIPE, **parser.dataset_defaults.get(IMAGENET, {}))
        args = parser.parse_args(argv)
        if args.lr is None:
            args.lr = REFERENCE_LR * args.train_batch / REFERENCE_BATCH
    for action in parser._actions:  # argparse lists a parser's flags nowhere public
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if action.type is float and not all(v is None or math.isfinite(v) for v in values):
            flag = next((o for o in action.option_strings if o.startswith('--')), action.dest)
            parser.error(f'{flag} must be a finite number, got {_shown(value)}')
    return args


def flag_names(method):
    """{dest: how the command line spells it}, e.g. 'weight_decay': '--weight-decay'."""
    actions = build_parser('', method)._actions  # argparse lists a parser's flags nowhere public
    return {a.dest: next((o for o in a.option_strings if o.startswith('--')), a.dest)
            for a in actions if a.dest != 'help'}


def _shown(value):
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, (list, tuple)):
        return ' '.join(map(str, value))
    return str(value)


def changed_flags(method, saved, args):
    """[(flag, saved value, value in args)] for every flag that defines what a run trains
    (not bookkeeping, not --epochs or --start-epoch) whose value in args differs from the
    run's saved args. Flags one of them lacks (another version's) are not compared."""
    names, bookkeeping = flag_names(method), BOOKKEEPING | method.bookkeeping
    return [(names[key], _shown(saved[key]), _shown(getattr(args, key)))
            for key in sorted(saved) if key in names and hasattr(args, key)
            and key not in bookkeeping and key != 'epochs' and saved[key] != getattr(args, key)]

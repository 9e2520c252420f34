"""Everything a run needs before its first step: checked flags, device, world, data, model."""
import copy
import math
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from .data import UNOFFICIAL_COPIES, UNOFFICIAL_FLAG, DeviceLoader, load_dataset, rank_share
from .distributed import init_process_group, world_from_env
from .errors import UserError
from .imagefolder import IMAGENET, check_same_images, load_image_folder

TEST_BATCH = 100        # the original's test batch
FAST_TEST_BATCH = 1000  # under --fast on CUDA: evaluation is launch-bound at 100


def check_flags(args, method, world):
    for flag, value in (('--epochs', args.epochs), ('--train-batch', args.train_batch),
                        ('--test-batch', args.test_batch)):
        if value is not None and value < 1:
            raise UserError(f'{flag} must be at least 1, got {value}')
    if args.train_batch % world.size:
        raise UserError(f'--train-batch {args.train_batch} (the global batch) does not divide '
                        f'over {world.size} ranks')
    if args.train_batch < 2 * world.size:  # a BatchNorm in training needs 2 images
        raise UserError(f'--train-batch {args.train_batch} gives {args.train_batch // world.size} '
                        f'image(s) per batch to each of {world.size} rank(s); BatchNorm needs at '
                        f'least 2: use --train-batch {2 * world.size} or more')
    if args.gpu_id is not None and not args.gpu_id.isdigit():
        raise UserError(f'--gpu-id takes one GPU index, got {args.gpu_id!r}; '
                        'for several GPUs use torchrun --nproc_per_node N')
    if args.manualSeed is not None and not 0 <= args.manualSeed < 2**32:
        raise UserError(f'--manualSeed must be in [0, 2**32), got {args.manualSeed}')
    if args.unofficial_data and args.dataset not in UNOFFICIAL_COPIES:
        raise UserError(f'{UNOFFICIAL_FLAG} applies to {" and ".join(UNOFFICIAL_COPIES)} only, '
                        f'not to --dataset {args.dataset}')
    if args.dataset == IMAGENET and args.image_size < 32:
        raise UserError(f'--image-size must be at least 32 (the networks downsample 32 '
                        f'times), got {args.image_size}')
    if not (math.isfinite(args.save_every_minutes) and args.save_every_minutes >= 0):
        raise UserError(f'--save-every-minutes must be a number >= 0, got '
                        f'{args.save_every_minutes}')
    if args.workers < 0:
        raise UserError(f'-j/--workers must be 0 (load in the main process) or more, got '
                        f'{args.workers}')
    if args.train_subset < 0 or args.start_epoch < 0:
        raise UserError('--train-subset and --start-epoch cannot be negative')
    # The optimiser's flags, checked here rather than by torch.optim.SGD's ValueError; NaN
    # fails every comparison, hence the `not ... > 0` forms.
    for flag, value in (('--lr', args.lr), ('--gamma', args.gamma)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f'{flag} must be a positive number, got {value}')
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise UserError(f'--weight-decay must be a number >= 0, got {args.weight_decay}')
    if not 0 <= args.momentum < 1:  # 1 and above: the momentum buffer grows without bound
        raise UserError(f'--momentum must be in [0, 1), got {args.momentum}')
    if args.nesterov and not args.momentum > 0:
        raise UserError(f'--nesterov needs --momentum > 0, got {args.momentum}')
    negative = [m for m in args.schedule if m < 0]
    if negative:
        raise UserError(f'--schedule milestones are 0-based epochs (>= 0), got '
                        f'{" ".join(map(str, negative))}')
    method.validate(args)
    check_pack(args, method, world)


def check_pack(args, method, world):
    """--seeds: one refusal line for whatever a pack of runs cannot hold (utils/pack.py)."""
    seeds = args.seeds
    if not seeds:
        if args.checkpoint and '{seed}' in args.checkpoint:
            raise UserError(f'-c {args.checkpoint}: --seeds fills in {{seed}}; pass --seeds, '
                            'or a folder without {seed}')
        return
    refusals = [
        (len(set(seeds)) < len(seeds), 'each seed once'),
        (not all(0 <= seed < 2**32 for seed in seeds), 'seeds in [0, 2**32)'),
        (args.manualSeed is not None, 'it sets every run\'s seed: drop --manualSeed'),
        (args.evaluate, '-e evaluates one checkpoint: drop --seeds'),
        (args.resume not in ('', 'auto'), 'a pack continues with --resume auto (every run in its '
                                          'own folder)'),
        (bool(getattr(args, 'init_from', None)), 'each run starts from its own seed: drop '
                                                 '--init-from'),
    ]
    if len(seeds) > 1:    # one seed is one run, in its folder: no pack
        refusals += pack_refusals(args, method, world)
    for refused, why in refusals:
        if refused:
            raise UserError(f'--seeds: {why}')


def pack_refusals(args, method, world):
    """[(refused, why)] for what a pack of runs cannot hold (utils/pack.py)."""
    methods_own = method.packable(args)   # the method's reason, or None
    return [
        (world.distributed, 'a pack trains in one process: not under torchrun'),
        (args.dataset == IMAGENET, "ImageNet's folder loaders are not packed"),
        (args.compile, 'not with --compile (a pack is one vmapped model; use --cuda-graphs)'),
        (args.amp == 'fp16', "fp16's gradient scaler would skip every run's step when one "
                             'overflows: use --amp bf16'),
        (bool(args.drop), f'--drop {args.drop}: the runs would draw their dropout masks from '
                          'one generator, so no run could equal its run alone (--drop 0; the '
                          "OKDDip code's VGG drops out 0.5 in branches by default)"),
        (bool(getattr(args, 'memory_efficient', False)), '--memory-efficient recomputes inside '
                                                         'the backward pass, which a pack cannot'),
        (methods_own is not None, methods_own),
    ]


def member_folder(args, seed):
    """The folder of a pack's run of `seed`: -c with {seed} filled in, or -c/seedS."""
    base = args.checkpoint or os.path.join('checkpoints', args.dataset,
                                           f'{args.arch}-{args.depth}')
    if '{seed}' in base:
        return base.replace('{seed}', str(seed))
    return os.path.join(base, f'seed{seed}')


def member_args(args):
    """Each run's own flags: [args] for one run; for a pack (--seeds) a copy per seed, with
    its seed and its folder."""
    if not args.seeds:
        return [args]
    members = []
    for seed in args.seeds:
        member = copy.copy(args)
        member.manualSeed, member.checkpoint = seed, member_folder(args, seed)
        members.append(member)
    return members


def check_same_position(states, folders):
    """A pack starts, or continues, as a whole: every run new, or every run's checkpoint at
    the same epoch and batch."""
    if len(states) < 2:
        return
    new = [folder for folder, state in zip(folders, states) if state is None]
    positions = {(state['epoch'], state['step']) for state in states if state is not None}
    if new and len(new) < len(states):
        raise UserError(f'--seeds: {", ".join(new)} hold(s) no run to continue while the other '
                        'runs of the pack do: a pack starts or continues as a whole (continue '
                        'the runs apart, or start the new ones in a pack of their own)')
    if len(positions) > 1:
        where = ', '.join(f'{folder} at epoch {state["epoch"]} batch {state["step"]}'
                          for folder, state in zip(folders, states))
        raise UserError(f'--seeds: the runs stand at different points ({where}): a pack '
                        'continues only runs that stopped together; continue them apart')


def pick_device(args, world):
    if args.device == 'cpu':
        return torch.device('cpu')
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.gpu_id is not None:
        if world.distributed:
            raise UserError('under torchrun each rank uses GPU LOCAL_RANK: drop --gpu-id and '
                            'choose GPUs with CUDA_VISIBLE_DEVICES')
        if int(args.gpu_id) >= count:
            raise UserError(f'GPU {args.gpu_id} does not exist: this machine has {count} CUDA '
                            'GPU(s); pass another --gpu-id, or --device cpu')
        return torch.device('cuda', int(args.gpu_id))
    if count:
        return torch.device('cuda', world.local_rank % count)
    if args.device == 'cuda':
        raise UserError('--device cuda: no CUDA GPU is available on this machine')
    return torch.device('cpu')


def apply_fast_preset(args, device, distributed=False):
    """--fast: what is numerically safe and faster on this device (see docs/SPEED.md).

    On CUDA: bf16 autocast, channels_last, TF32 (configure_cuda), fused SGD, the training
    step as a CUDA graph (utils/graphs.py; one process, without --compile or fp16) and
    evaluation in batches of FAST_TEST_BATCH unless --test-batch is given. Not torch.compile:
    compiling took minutes on an H200, longer than the graphed run it would speed up. On the
    CPU only channels_last: bf16 and compile were measured slower or no faster there."""
    if args.test_batch is None:
        fast_cuda = args.fast and device.type == 'cuda'
        args.test_batch = FAST_TEST_BATCH if fast_cuda else TEST_BATCH
    if not args.fast:
        return
    args.channels_last = True
    if device.type == 'cuda':
        args.amp = 'bf16' if args.amp == 'off' else args.amp
        args.cuda_graphs = args.cuda_graphs or not (distributed or args.compile
                                                    or args.amp == 'fp16')


def check_cuda_graphs(args, device, world):
    """--cuda-graphs asked for where a graph cannot hold the step: one line each."""
    if not args.cuda_graphs:
        return
    if device.type != 'cuda' and not args.check_only:
        raise UserError('--cuda-graphs needs a CUDA GPU (this run is on the CPU)')
    if world.distributed:
        raise UserError('--cuda-graphs runs in one process only: drop it under torchrun '
                        '(--fast leaves it off there)')
    if args.compile:
        raise UserError('--cuda-graphs and --compile: choose one (graphs record the eager step)')
    if args.amp == 'fp16':
        raise UserError("--cuda-graphs with --amp fp16: the gradient scaler reads the GPU at "
                        'every step, which a graph cannot hold; use --amp bf16')


def configure_cuda(device, args):
    """Default flags keep the original's fp32 mathematics: TF32 (on by default for cuDNN
    convolutions on Ampere and later) only under --fast. --deterministic: deterministic
    kernels and no autotuning, so a resumed CUDA run is bitwise an uninterrupted one."""
    torch.cuda.set_device(device)
    if args.deterministic:
        os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not args.deterministic
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = args.fast


def setup(args, method):
    world = world_from_env()
    check_flags(args, method, world)
    # --check-only may run where the run will not (a login node): this machine's GPUs say
    # nothing about the run's, so their checks are left to the run.
    device = torch.device('cpu') if args.check_only else pick_device(args, world)
    apply_fast_preset(args, device, world.distributed)
    if args.seeds and len(args.seeds) > 1:   # a pack's convolutions take stacks of batches
        args.channels_last = False           # (5-D), which have no NHWC layout
    check_cuda_graphs(args, device, world)
    if args.sync_bn and world.distributed and device.type != 'cuda':
        raise UserError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU")
    if device.type == 'cuda':
        configure_cuda(device, args)
    init_process_group(world, device)
    args.device_name, args.torch_version = device_name(device, world), str(torch.__version__)
    return world, device


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def device_name(device, world):
    """What args.json records of the hardware: the GPU's name or the CPU's model, and the
    processes under torchrun."""
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'CPU {cpu_name()}'
    return name + (f' x {world.size} processes' if world.distributed else '')


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(args, method, num_classes, device):
    model = method.build_model(args, num_classes)
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def build_optimizer(args, model, device):
    """SGD over the trainable parameters (a frozen teacher has none); fused under --fast on
    CUDA, which is the same update in one kernel."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {'fused': True} if args.fast and device.type == 'cuda' else {}
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                           weight_decay=args.weight_decay, nesterov=args.nesterov, **fused)


@dataclass
class Data:
    num_classes: int
    train: object      # a loader: batches(epoch, start), labels, device (utils/data.py)
    test: object       # this rank's share of the test split
    num_test: int      # test images over all ranks
    listing: dict = None  # ImageNet: what the run records of its images (imagefolder.py)


def load_data(args, device, world, views=1, resumed=None, runs=None):
    """The dataset's loaders: ImageNet's folders read by worker processes (every rank scans
    the folders itself), the others as tensors on the device. `views`: training batches of
    that many differently cropped and flipped copies of their images (KDCL's). RESUMED:
    (state, path) of the checkpoint a run continues, whose images the folders must still
    list. `runs`: each run's flags, a pack's (what data copy each trains on is recorded
    there)."""
    if args.dataset == IMAGENET:
        if views > 1:
            raise UserError(f'{views} views of each training image: the ImageNet loader gives '
                            'one (for KDCL: --no-icl)')
        data = Data(*world.together(lambda: load_image_folder(args, device, world)))
        if resumed is not None:
            check_same_images(resumed[0].get('listing'), data.listing, resumed[1], args.data_dir)
    else:
        data = load_tensors(args, device, world, views, runs)
    last = len(data.train.labels) % args.train_batch
    if 0 < last < 2 * world.size:  # BatchNorm in training needs 2 samples (the gate: per rank)
        raise UserError(f'the last batch would hold {last} image(s) for {world.size} rank(s), '
                        'too few for BatchNorm; change --train-batch or --train-subset')
    return data


def record_data_copy(runs, copy, world):
    """Each run's args.data_copy (`runs`: the flags of each run the process trains, one but
    for a pack): the copy of the data it trains on (None where only CIFAR's are told apart). A
    run continues only on the copy it started on (args.data_copy is then the first command's:
    run_state.FIRST_COMMAND); an unofficial copy is said in one line."""
    for args in runs:
        started = getattr(args, 'data_copy', None)
        if copy and started and started.get('sha256') != copy['sha256']:
            raise UserError(f'{args.data_dir!r} holds another copy of {args.dataset} (sha256 '
                            f'{copy["sha256"][:12]}...) than this run started on (sha256 '
                            f'{str(started.get("sha256"))[:12]}..., its args.json data_copy): '
                            'continue it on that copy, or start a new run')
        args.data_copy = copy
    args = runs[0]
    if copy and not copy['official'] and world.is_main:
        print(f'warning: {args.dataset} in {args.data_dir} is not the official release: '
              f'training on it as {UNOFFICIAL_FLAG} asks (sha256 {copy["sha256"]}, recorded '
              'in args.json; report.py marks the run)', flush=True)


def load_tensors(args, device, world, views=1, runs=None):
    # Under torchrun one rank per data folder prepares or downloads it while the others wait;
    # a failure on any rank stops every rank with its message (World.in_turn).
    data = world.in_turn(lambda: load_dataset(args.dataset, args.data_dir, args.unofficial_data))
    record_data_copy(runs or [args], data.copy, world)
    if args.train_subset:
        data.train_images = data.train_images[:args.train_subset]
        data.train_labels = data.train_labels[:args.train_subset]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    train = DeviceLoader(data.train_images.to(device), data.train_labels.to(device), data.mean,
                         data.std, args.train_batch, shuffle=True, augment=data.augment,
                         rank=world.rank, world_size=world.size, memory_format=memory_format,
                         views=views)
    test_images, test_labels = rank_share(data.test_images, data.test_labels,
                                          world.rank, world.size)
    test = DeviceLoader(test_images.to(device), test_labels.to(device), data.mean, data.std,
                        args.test_batch, shuffle=False, augment=False,
                        memory_format=memory_format)
    return Data(data.num_classes, train, test, len(data.test_labels))

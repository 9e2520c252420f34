"""benchmark.py --pack K: K runs of the model, seeds 0 to K-1, trained as one pack (utils/pack.py)
as cifar_*.py --seeds trains them: each run's model built from its seed, its own loader (order,
crops, flips) over the same images, one stacked step (utils/pack.py's pack_train_step), in the
contiguous layout a pack takes. Its timed blocks alternate with the solo run's, so that the
ratio of the two compares adjacent blocks."""
from statistics import median

import torch

from benchmarks.names import method_and_flags
from utils.data import CIFAR_MEAN, CIFAR_STD, DeviceLoader
from utils.distributed import World
from utils.errors import UserError
from utils.graphs import GraphedStep
from utils.pack import Pack, PackLoader, over_members, pack_train_step
from utils.setup import build_model, build_optimizer, check_pack, seed_everything
from utils.steps import Meters


def pack_method_and_flags(args, model):
    """(method, the flags of a pack's runs of `model`): the model's, with the benchmark's
    options, in the contiguous layout (a pack's batches are 5-D, which have no channels_last;
    utils/setup.py)."""
    memory = {'memory_efficient': True} if args.memory_efficient and 'densenet' in model else {}
    return method_and_flags(model, channels_last=False, fast=args.fast, lr=0.01, amp=args.amp,
                            compile=args.compile, **memory)


def pack_config(args):
    return pack_method_and_flags(args, args.one)[1]


def pack_refusal(args, configs):
    """Why --pack cannot be measured with these flags, or None: what cifar_*.py --seeds refuses
    (utils/setup.py's check_pack) for any model's flags (`configs`: [(model, method, flags)],
    the flags with the benchmark's own options set)."""
    if args.pack < 2:
        return f'--pack {args.pack}: a pack holds 2 runs or more'
    for model, method, config in configs:
        config.seeds = list(range(args.pack))
        try:
            check_pack(config, method, World())
        except UserError as e:
            return f'--pack with {model}: {str(e).removeprefix("--seeds: ")}'
    return None


def pack_stepper(args, method, config, images, labels, device):
    """(step(x, y), wait(), the pack's batches) for cifar.py's timed_blocks: a step of the
    whole pack on a batch per run, and a wait for the device."""
    models = []
    for seed in range(args.pack):
        seed_everything(seed)
        models.append(build_model(config, method, 100, device))
    pack = Pack(models).train()
    objective = method.objective(config)
    optimizer = build_optimizer(config, pack, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    names = method.columns(config)
    meters = Meters(len(names), device, args.pack)
    loader = DeviceLoader(images, labels, CIFAR_MEAN, CIFAR_STD, args.batch, shuffle=True,
                          augment=True)

    def train_and_count(x, y):
        output, loss_sum = pack_train_step(pack, objective, optimizer, scaler, x, y, 40,
                                           args.batch, args.amp)
        return loss_sum, over_members(lambda out, target: method.correct(out, target, names),
                                      output, y)
    graphed = GraphedStep(train_and_count) if args.cuda_graphs else None

    def step(x, y):
        loss_sum, correct = graphed((), x, y) if graphed else train_and_count(x, y)
        meters.update(loss_sum, correct, y.shape[-1])

    def wait():
        meters.count.item()
    return step, wait, PackLoader(loader, range(args.pack)).batches(epoch=1)


def pack_results(members, solo_rates, pack_rates):
    """The pack's figures: img/s counting every run's images, per run, and against the
    solo run's adjacent blocks (None without --pack)."""
    if not members:
        return {'pack': None, 'pack_train_img_s': None, 'pack_train_img_s_repeats': [],
                'pack_per_run_img_s': None, 'pack_vs_solo': None}
    rate = median(pack_rates)
    return {'pack': members, 'pack_train_img_s': rate, 'pack_train_img_s_repeats': pack_rates,
            'pack_per_run_img_s': rate / members,
            'pack_vs_solo': median(p / s for p, s in zip(pack_rates, solo_rates))}

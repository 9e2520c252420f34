"""The one training and evaluation engine behind cifar_one.py and cifar_baseline.py.

The two scripts differ only in the model they name and the objective they pass in.
"""
import os
import random
import signal
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
from progress.bar import Bar
from torch.nn.parallel import DistributedDataParallel

from models import ARCHS, blocks_per_stage
from .checkpoint import (FORMAT_VERSION, check_identity, load_checkpoint, rng_states,
                         save_atomic, set_rng_states)
from .data import DeviceLoader, load_dataset, rank_share
from .distributed import destroy_process_group, init_process_group, world_from_env
from .errors import UserError
from .logger import ARGS, LOG, accuracy_columns, write_args, write_run_files
from .losses import correct_counts
from .schedule import learning_rate

CHECKPOINT, BEST = 'checkpoint.pth.tar', 'model_best.pth.tar'
RUN_FILES = (CHECKPOINT, BEST, LOG, ARGS)
EXIT_USER_ERROR, EXIT_DIVERGED = 2, 3


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the current step has been written."""


class Diverged(Exception):
    """The loss became NaN or Inf."""


def main(parser, make_objective, argv=None):
    """Parse flags, run, and turn every anticipated failure into one line and an exit code."""
    args = parser.parse_args(argv)
    if not hasattr(args, 'num_branches'):
        args.num_branches = 1
    try:
        objective = make_objective(args)
        return evaluate_checkpoint(args, objective) if args.evaluate else train(args, objective)
    except UserError as e:
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    except Diverged as e:
        print(f'{parser.prog}: stopped: {e}', file=sys.stderr)
        return EXIT_DIVERGED
    except Preempted as e:
        print(f'{parser.prog}: {e.args[0]}', file=sys.stderr)
        return 128 + e.args[1]
    finally:
        destroy_process_group()


# ----------------------------------------------------------------------------- setup

def check_flags(args, world):
    try:
        blocks_per_stage(args.depth)
    except ValueError as e:
        raise UserError(f'--depth: {e}') from None
    if args.num_branches < 1:
        raise UserError(f'--num-branches must be at least 1, got {args.num_branches}')
    if args.drop != 0:
        raise UserError('--drop: the CIFAR ResNets have no dropout layer (as in the original)')
    for flag, value in (('--epochs', args.epochs), ('--train-batch', args.train_batch),
                        ('--test-batch', args.test_batch)):
        if value < 1:
            raise UserError(f'{flag} must be at least 1, got {value}')
    if args.train_batch % world.size:
        raise UserError(f'--train-batch {args.train_batch} (the global batch) does not divide '
                        f'over {world.size} ranks')
    if args.manualSeed is not None and not 0 <= args.manualSeed < 2**32:
        raise UserError(f'--manualSeed must be in [0, 2**32), got {args.manualSeed}')
    if args.train_subset < 0 or args.start_epoch < 0:
        raise UserError('--train-subset and --start-epoch cannot be negative')


def pick_device(args, world):
    if args.device == 'cpu':
        return torch.device('cpu')
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.gpu_id is not None:
        if world.distributed:
            raise UserError('under torchrun each rank uses GPU LOCAL_RANK: drop --gpu-id and '
                            'choose GPUs with CUDA_VISIBLE_DEVICES')
        if not args.gpu_id.isdigit():
            raise UserError(f'--gpu-id takes one GPU index, got {args.gpu_id!r}; '
                            'for several GPUs use torchrun --nproc_per_node N')
        if int(args.gpu_id) >= count:
            raise UserError(f'GPU {args.gpu_id} does not exist: this machine has {count} CUDA '
                            'GPU(s); pass another --gpu-id, or --device cpu')
        return torch.device('cuda', int(args.gpu_id))
    if count:
        return torch.device('cuda', world.local_rank % count)
    if args.device == 'cuda':
        raise UserError('--device cuda: no CUDA GPU is available on this machine')
    return torch.device('cpu')


def setup(args):
    world = world_from_env()
    check_flags(args, world)
    device = pick_device(args, world)
    if args.sync_bn and world.distributed and device.type != 'cuda':
        raise UserError("--sync-bn needs CUDA: PyTorch's SyncBatchNorm does not run on the CPU")
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    init_process_group(world, device)
    return world, device


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(args, num_classes, device):
    kwargs = {'num_branches': args.num_branches} if args.arch == 'one_resnet' else {}
    model = ARCHS[args.arch](args.depth, num_classes, **kwargs)
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def identity(args):
    return dict(arch=args.arch, depth=args.depth, dataset=args.dataset,
                num_branches=args.num_branches)


def load_data(args, device, world):
    data = load_dataset(args.dataset, args.data_dir)
    if args.train_subset:
        data.train_images = data.train_images[:args.train_subset]
        data.train_labels = data.train_labels[:args.train_subset]
    last = len(data.train_labels) % args.train_batch
    if 0 < last < 2 * world.size:  # BatchNorm in training needs 2 samples (the gate: per rank)
        raise UserError(f'the last batch would hold {last} image(s) for {world.size} rank(s), '
                        'too few for BatchNorm; change --train-batch or --train-subset')
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    train = DeviceLoader(data.train_images.to(device), data.train_labels.to(device), data.mean,
                         data.std, args.train_batch, shuffle=True, augment=data.augment,
                         rank=world.rank, world_size=world.size, memory_format=memory_format)
    test_images, test_labels = rank_share(data.test_images, data.test_labels,
                                                 world.rank, world.size)
    test = DeviceLoader(test_images.to(device), test_labels.to(device), data.mean, data.std,
                        args.test_batch, shuffle=False, augment=False,
                        memory_format=memory_format)
    return data, train, test


def autocast(amp, device):
    """The mixed-precision context for --amp off|bf16|fp16."""
    if amp == 'off':
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == 'bf16' else torch.float16)


def train_step(model, objective, optimizer, scaler, images, targets, epoch, batch_size, amp):
    """One SGD step on this rank's images. `batch_size` is the global batch over the world
    size, so DDP's gradient average is the global batch mean. Returns (output, loss summed
    over this rank's images), both left on the device."""
    with autocast(amp, images.device):
        output = model(images)
        loss = objective(output, targets, epoch, batch_size=batch_size)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return output, loss.detach() * batch_size


# ----------------------------------------------------------------------------- run folder

def resolve_run(args):
    """(checkpoint to resume or None, run folder). Never lets a fresh run overwrite a run."""
    folder = args.checkpoint or os.path.join('checkpoints', args.dataset,
                                             f'{args.arch}-{args.depth}')
    if args.resume == 'auto':
        candidate = os.path.join(folder, CHECKPOINT)
        return (candidate if os.path.exists(candidate) else None), folder
    if args.resume:
        return args.resume, os.path.dirname(args.resume) or '.'
    existing = [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]
    if existing and not args.overwrite:
        raise UserError(f'{folder!r} already holds a run ({", ".join(existing)}); continue it '
                        f'with --resume {os.path.join(folder, CHECKPOINT)} (or --resume auto), '
                        'start over with --overwrite, or choose another --checkpoint')
    return None, folder


def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, '.write-test')
        with open(probe, 'wb') as f:
            f.write(b'ok')
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise UserError(f'cannot write to checkpoint folder {folder!r}: {e.strerror or e}') from None


# ----------------------------------------------------------------------------- metrics

class Meters:
    """Sums kept on the device (no host synchronisation per step): loss, hits, images."""

    def __init__(self, num_scores, device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros(num_scores, dtype=torch.int64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)

    def update(self, loss_sum, output, targets):
        self.loss += loss_sum
        self.correct += correct_counts(output, targets)
        self.count += len(targets)
        self.nonfinite |= ~torch.isfinite(loss_sum)

    def state(self):
        return {'loss': self.loss, 'correct': self.correct, 'count': self.count}

    def load(self, state):
        self.loss.copy_(state['loss'])
        self.correct.copy_(state['correct'])
        self.count.copy_(state['count'])

    def reduce(self, world):
        for tensor in (self.loss, self.correct, self.count):
            world.all_reduce(tensor)
        return self

    def summary(self, names):
        """{'loss': mean loss, 'acc_<name>': top-1 % per branch/ensemble, 'acc_mean': branches}."""
        count = max(self.count.item(), 1)
        accs = (self.correct.double() * 100 / count).tolist()
        out = {'loss': self.loss.item() / count}
        out.update({f'acc_{n}': a for n, a in zip(names, accs)})
        branch_accs = [out[f'acc_{n}'] for n in names if n != 'ens']
        out['acc_mean'] = sum(branch_accs) / len(branch_accs)
        return out


# ----------------------------------------------------------------------------- stop requests

class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the training loop checks at step boundaries."""

    def __init__(self):
        self.signum = 0

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- evaluation

@torch.inference_mode()
def evaluate(model, loader, objective, epoch, names, world, amp='off'):
    """Test loss and top-1 of every branch (and ensemble) over the loader's images."""
    model.eval()
    meters = Meters(len(names), loader.images.device)
    with autocast(amp, loader.images.device):
        for images, targets in loader.batches():
            output = model(images)
            meters.update(objective(output, targets, epoch) * len(targets), output, targets)
    return meters.reduce(world).summary(names)


def evaluate_checkpoint(args, objective):
    """-e/--evaluate: test accuracy of every branch, their mean and the ensemble."""
    world, device = setup(args)
    if not args.resume or args.resume == 'auto':
        raise UserError('-e/--evaluate needs --resume PATH of the checkpoint to evaluate')
    state = load_checkpoint(args.resume)
    check_identity(state, args.resume, **identity(args))
    data, _, test = load_data(args, device, world)
    model = build_model(args, data.num_classes, device)
    model.load_state_dict(state['state_dict'])
    names = accuracy_columns(args.num_branches, args.arch == 'one_resnet')
    metrics = evaluate(model, test, objective, state['epoch'], names, world, args.amp)
    if world.is_main:
        print(f'{args.resume} (epoch {state["epoch"]}), {args.dataset} test set, '
              f'{len(data.test_labels)} images: top-1 accuracy (%)')
        for n in names:
            label = 'ensemble (ONE-E)' if n == 'ens' else f'branch {n}'
            print(f'  {label:<18} {metrics[f"acc_{n}"]:.2f}')
        if args.num_branches > 1:
            print(f'  {"mean of branches":<18} {metrics["acc_mean"]:.2f}')
    return 0


# ----------------------------------------------------------------------------- training

class Trainer:
    """State of one training run and the loop over its epochs."""

    def __init__(self, args, objective):
        self.args, self.objective = args, objective
        self.world, self.device = setup(args)
        resume, self.folder = resolve_run(args)
        args.checkpoint = self.folder
        state = load_checkpoint(resume) if resume else None
        if state is not None:
            check_identity(state, resume, **identity(args))
            if 'optimizer' not in state:
                raise UserError(f'{resume!r} holds weights only (an export); evaluate it with -e')
        if self.world.is_main:
            check_writable(self.folder)
        self.seed = state['seed'] if state else (
            args.manualSeed if args.manualSeed is not None else random.randint(1, 10000))
        args.manualSeed = self.seed
        seed_everything(self.seed)

        self.data, self.train_loader, self.test_loader = load_data(args, self.device, self.world)
        self.train_loader.seed = self.seed
        self.model = build_model(args, self.data.num_classes, self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args.lr,
                                         momentum=args.momentum, weight_decay=args.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == 'fp16')
        self.names = accuracy_columns(args.num_branches, args.arch == 'one_resnet')
        self.epoch, self.step, self.best_acc, self.history = args.start_epoch, 0, 0.0, []
        self.partial = None
        if state is not None:
            self.restore(state)
            if self.world.is_main:
                print(f'Resuming {resume}: epoch {self.epoch + 1}, batch {self.step}, '
                      f'best branch-1 test top-1 so far {self.best_acc:.2f}%')
        self.train_model = self.wrap(self.model)
        if self.world.is_main:
            write_args(self.folder, args)
            if state is None:  # proves the folder takes a checkpoint before any work is done
                save_atomic(self.checkpoint_state(), os.path.join(self.folder, CHECKPOINT))

    def wrap(self, model):
        if self.world.distributed:
            device_ids = [self.device.index] if self.device.type == 'cuda' else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.args.compile else model

    def restore(self, state):
        self.model.load_state_dict(state['state_dict'])
        self.optimizer.load_state_dict(state['optimizer'])
        if state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        self.epoch, self.step = state['epoch'], state['step']
        self.best_acc, self.history = state['best_acc'], state['history']
        self.partial = state['meters'] if self.world.is_main else None
        set_rng_states(state['rng'])

    def checkpoint_state(self, meters=None):
        """Everything an uninterrupted run would still have in memory at this point."""
        return {'format': FORMAT_VERSION, **identity(self.args),
                'num_classes': self.data.num_classes, 'seed': self.seed,
                'epoch': self.epoch, 'step': self.step, 'best_acc': self.best_acc,
                'state_dict': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else None,
                'meters': meters.state() if meters is not None else None,
                'history': self.history, 'rng': rng_states(), 'args': vars(self.args)}

    def path(self, name):
        return os.path.join(self.folder, name)

    def run(self):
        with StopRequest() as stop:
            while self.epoch < self.args.epochs:
                self.run_epoch(stop)
                if stop.signum:
                    raise Preempted(f'stopped by signal {stop.signum} after epoch {self.epoch}; '
                                    f'resume with --resume {self.path(CHECKPOINT)}', stop.signum)
        if self.world.is_main and self.history:
            best = max(self.history, key=lambda row: row['test_acc_1'])
            last = self.history[-1]
            print(f'Done. Branch 1 test top-1: best {best["test_acc_1"]:.2f}% (epoch '
                  f'{best["epoch"]}), last {last["test_acc_1"]:.2f}%' +
                  (f'; ensemble last {last["test_acc_ens"]:.2f}%' if 'ens' in self.names else ''))
        return 0

    def run_epoch(self, stop):
        args, epoch = self.args, self.epoch
        lr = learning_rate(epoch, args.lr, args.schedule, args.gamma)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        start = time.time()
        train = self.train_epoch(stop, lr)
        self.world.broadcast_buffers(self.model)
        test = evaluate(self.model, self.test_loader, self.objective, epoch, self.names,
                        self.world, args.amp)
        row = {'epoch': epoch + 1, 'lr': lr, 'rampup': self.objective.rampup(epoch),
               'train_loss': train['loss'], 'test_loss': test['loss']}
        for key in [f'acc_{n}' for n in self.names] + ['acc_mean']:
            row[f'train_{key}'], row[f'test_{key}'] = train[key], test[key]
        row['seconds'] = round(time.time() - start, 3)
        self.history.append(row)
        self.epoch, self.step = epoch + 1, 0
        is_best = row['test_acc_1'] > self.best_acc
        self.best_acc = max(self.best_acc, row['test_acc_1'])
        if self.world.is_main:
            self.save_epoch(is_best)
            print(self.summary_line(row), flush=True)

    def save_epoch(self, is_best):
        """Best model first, then the checkpoint: a crash between them only repeats an epoch."""
        state = self.checkpoint_state()
        if is_best:
            save_atomic(state, self.path(BEST))
        save_atomic(state, self.path(CHECKPOINT))
        title = f'{self.args.arch}-{self.args.depth} on {self.args.dataset}'
        write_run_files(self.folder, self.history, self.names, title)

    def train_epoch(self, stop, lr):
        args, device, world = self.args, self.device, self.world
        self.train_model.train()
        meters = Meters(len(self.names), device)
        if self.partial is not None:
            meters.load(self.partial)
            self.partial = None
        # Reading device values stalls a GPU's queue, so on CUDA check flags every few steps.
        check_every = 25 if device.type == 'cuda' else 1
        num_batches = len(self.train_loader)
        bar = Bar(f'Epoch {self.epoch + 1}', max=num_batches - self.step,
                  suffix='%(index)d/%(max)d batches, %(elapsed_td)s, eta %(eta_td)s'
                  ) if world.is_main else None  # shown on a terminal only
        for step, (images, targets) in enumerate(
                self.train_loader.batches(self.epoch, self.step), self.step):
            global_size = min(args.train_batch, len(self.train_loader.labels) - step * args.train_batch)
            output, loss_sum = train_step(self.train_model, self.objective, self.optimizer,
                                          self.scaler, images, targets, self.epoch,
                                          global_size / world.size, args.amp)
            meters.update(loss_sum, output, targets)
            self.step = step + 1
            if self.step % check_every == 0 or self.step == num_batches:
                self.check(meters, stop)
            if bar is not None:
                bar.next()
        if bar is not None:
            bar.finish()
        return meters.reduce(world).summary(self.names)

    def check(self, meters, stop):
        """Stop on a NaN/Inf loss (saving nothing) or, on a signal, save this step and stop."""
        flags = torch.stack([meters.nonfinite.to(torch.int64),
                             torch.tensor(stop.signum, device=self.device)])
        nonfinite, signum = self.world.all_reduce(flags, torch.distributed.ReduceOp.MAX).tolist()
        if nonfinite:
            raise Diverged(f'the loss became NaN or Inf in epoch {self.epoch + 1} (by batch '
                           f'{self.step}); {self.path(CHECKPOINT)} and {self.path(BEST)} keep '
                           'the last good state')
        if signum and self.step < len(self.train_loader):
            state = self.checkpoint_state(meters.reduce(self.world))
            if self.world.is_main:
                save_atomic(state, self.path(CHECKPOINT))
            raise Preempted(f'stopped by signal {signum} at epoch {self.epoch + 1}, batch '
                            f'{self.step}; saved {self.path(CHECKPOINT)}; resume with '
                            f'--resume {self.path(CHECKPOINT)}', signum)

    def summary_line(self, row):
        def accs(split):
            parts = ' '.join(f'{row[f"{split}_acc_{n}"]:.2f}' for n in self.names if n != 'ens')
            if len(self.names) > 1:
                parts += f' mean {row[f"{split}_acc_mean"]:.2f}'
            if 'ens' in self.names:
                parts += f' ens {row[f"{split}_acc_ens"]:.2f}'
            return parts
        return (f'Epoch {row["epoch"]}/{self.args.epochs} lr {row["lr"]:.4g} '
                f'w {row["rampup"]:.4f} | loss train {row["train_loss"]:.4f} test '
                f'{row["test_loss"]:.4f} | top-1 train {accs("train")} | test {accs("test")} '
                f'| {row["seconds"]:.1f}s')


def train(args, objective):
    return Trainer(args, objective).run()

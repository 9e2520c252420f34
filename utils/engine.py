"""The one training and evaluation engine behind every entry script.

An entry script names a method (methods/): its flags, model, objective and accuracy
columns. Everything else, the loop, evaluation, checkpoints, logs, signals and torchrun, is
here and the same for every method.
"""
import os
import random
import time
from contextlib import ExitStack

import torch
from progress.bar import Bar
from torch.nn.parallel import DistributedDataParallel

from .atomic import write_all_atomic
from .checkpoint import (FORMAT_VERSION, TRAINING, check_identity, check_keys, checkpoint_writer,
                         load_checkpoint, rng_states, save_atomic, set_rng_states)
from .cli import build_parser, changed_flags, parse_flags
from .distributed import wait_for_rank_0, world_from_env
from .errors import UserError
from .graphs import GraphedStep
from .imagefolder import IMAGENET, UnreadableImage
from .logger import epoch_line, result_line, run_files, write_args
from .records import BEST, CHECKPOINT, RUN_ID, write_status
from .run_folder import AlreadyDone, RunFolder, new_run_id
from .schedule import learning_rate
from .setup import build_model, build_optimizer, load_data, seed_everything, setup
from .steps import Meters, evaluate, member_columns
from .stops import Diverged, Preempted, StopRequest, quiet_unless, run_to_exit_code

# curves.png is redrawn after an epoch at most this often, and after the last epoch: drawing
# takes about 0.3 s, as long as a whole epoch of CIFAR on a large GPU.
PLOT_EVERY_SECONDS = 30
# Kept from a run's first command whatever a later one says (--resume overrides --start-epoch;
# data_copy: setup.record_data_copy refuses to continue on another copy).
FIRST_COMMAND = ('start_epoch', 'init_from', 'init_from_epoch', 'data_copy')


def main(method, argv=None):
    """Parse flags, then train or evaluate; every anticipated failure is one line and an
    exit code (utils/stops.py)."""
    world = world_from_env()
    parser = build_parser(method.usage, method)
    with quiet_unless(world.is_main):  # a bad flag or --help: shown once, not once per rank
        try:
            args = parse_flags(parser, argv)
        except SystemExit as e:
            if e.code and world.distributed and not world.is_main:
                wait_for_rank_0()
            raise
    args.method = method.name
    work = evaluate_checkpoint if args.evaluate else train
    return run_to_exit_code(lambda: work(args, method), world, parser.prog)


def identity(args, method):
    """What must agree between a checkpoint and the run that loads it."""
    return dict(method=method.name, arch=args.arch, depth=args.depth, dataset=args.dataset,
                **method.identity(args))


# ----------------------------------------------------------------------------- evaluation

def evaluate_checkpoint(args, method):
    """-e/--evaluate: test accuracy of every member, their mean and the ensemble."""
    world, device = setup(args, method)
    if not args.resume or args.resume == 'auto':
        raise UserError('-e/--evaluate needs --resume PATH of the checkpoint to evaluate')
    state = method.upgrade_checkpoint(load_checkpoint(args.resume))
    check_identity(state, args.resume, identity(args, method), method.identity_assumed)
    data = load_data(args, device, world)
    model = build_model(args, method, data.num_classes, device)
    model.load_state_dict(state['state_dict'])
    if args.check_only:
        print(f'check-only: would evaluate {args.resume} (epoch {state["epoch"]})')
        return 0
    names = method.columns(args)
    metrics = evaluate(model, data.test, method, method.objective(args), state['epoch'], names,
                       world, args.amp)
    if world.is_main:
        top5 = args.dataset == IMAGENET
        print(f'{args.resume} (epoch {state["epoch"]}), {args.dataset} test set, '
              f'{data.num_test} images: top-1{" and top-5" if top5 else ""} accuracy (%)')
        labels = {n: method.label(n) for n in names}
        if len(member_columns(names)) > 1:
            labels['mean'] = 'mean of ' + method.members
        width = max(map(len, labels.values()))
        for n, label in labels.items():
            fifth = f' {metrics[f"acc5_{n}"]:6.2f}' if top5 and n != 'mean' else ''
            print(f'  {label:<{width}} {metrics[f"acc_{n}"]:.2f}{fifth}')
    return 0


# ----------------------------------------------------------------------------- training

class Trainer:
    """State of one training run and the loop over its epochs."""

    def __init__(self, args, method, resources):
        """Check everything, load the data and build the run in memory; only then take the
        run folder (lock, earlier files moved aside) and write its first files. A refusal
        therefore never leaves a file behind."""
        self.args, self.method = args, method
        self.objective = method.objective(args)
        self.world, self.device = setup(args, method)
        run = RunFolder.from_args(args)
        self.folder = args.checkpoint = run.folder
        state = self.load_resumable(run) if run.resume else None
        source = method.upgrade_checkpoint(load_checkpoint(run.init_from)) if run.init_from else None
        if source is not None:
            check_identity(source, run.init_from, identity(args, method), method.identity_assumed)
        if state is None and args.start_epoch >= args.epochs:
            raise UserError(f'--start-epoch {args.start_epoch} leaves nothing to train with '
                            f'--epochs {args.epochs}: it must be below --epochs')
        if state is None:
            args.run_id = new_run_id()
        self.seed = state['seed'] if state else (
            args.manualSeed if args.manualSeed is not None else random.randint(1, 10000))
        args.manualSeed = self.seed
        seed_everything(self.seed)

        self.data = load_data(args, self.device, self.world, method.views(args),
                              resumed=(state, run.resume) if state is not None else None)
        self.train_loader, self.test_loader = self.data.train, self.data.test
        if args.train_subset > len(self.train_loader.labels):
            raise UserError(f'--train-subset {args.train_subset} is larger than {args.dataset}\'s '
                            f'{len(self.train_loader.labels)} training images: use at most that '
                            '(or 0 for all)')
        self.train_loader.seed = self.seed
        self.model = build_model(args, method, self.data.num_classes, self.device)
        self.optimizer = build_optimizer(args, self.model, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == 'fp16')
        self.names = method.columns(args)
        self.top5 = args.dataset == IMAGENET   # shown in log.txt and the epoch lines
        self.epoch, self.step, self.best_acc, self.history = args.start_epoch, 0, 0.0, []
        self.partial = None
        self.plotted_at = -float('inf')
        self.saved_at = time.monotonic()   # the last checkpoint, for --save-every-minutes
        if state is not None:
            self.restore(state, run.resume)
        elif source is not None:
            self.init_weights(source, run.init_from)
        self.epochs_saved = len(self.history)   # what checkpoint.pth.tar and the logs hold
        self.run_folder = run
        if args.check_only:
            return
        self.train_model = self.wrap(self.model)
        self.graphed_step = GraphedStep(self.train_and_count) if args.cuda_graphs else None
        # ---- nothing above has written a file; everything below writes into the run folder
        if self.world.is_main:
            self.take_folder(run, resources, state)

    def load_resumable(self, run):
        """The state of the run to continue, checked before anything is written: its model
        (identity), its keys, and what the run folder requires (RunFolder.check_continuation:
        its own run, unchanged flags, no rewind unasked, no shortening)."""
        args, path = self.args, run.resume
        state = self.method.upgrade_checkpoint(load_checkpoint(path))
        check_identity(state, path, identity(args, self.method), self.method.identity_assumed)
        if 'optimizer' not in state:
            raise UserError(f'{path!r} holds weights only (an export): evaluate it with -e, or '
                            f'start a new run from its weights with --init-from {path}')
        check_keys(state, path, TRAINING)
        if not all(type(state[key]) is int and state[key] >= 0 for key in ('epoch', 'step')):
            raise UserError(f'{path!r} is damaged: its epoch and batch are not counts')
        saved = state['args'] if isinstance(state['args'], dict) else {}
        for key in FIRST_COMMAND:  # provenance outlives the first command
            if key in saved:
                setattr(args, key, saved[key])
        # --epochs may change: the LR and ramp-up are functions of the epoch, so a run
        # continued to more epochs is the run those epochs would have made
        changed = changed_flags(self.method, saved, args)
        if args.manualSeed is not None and args.manualSeed != state['seed']:
            changed.append(('--manualSeed', state['seed'], args.manualSeed))
        args.run_id = run.check_continuation(state, changed, args.rewind, args.epochs)
        return state

    def init_weights(self, source, path):
        """--init-from: a new run from another checkpoint's weights only."""
        try:
            self.model.load_state_dict(source['state_dict'])
        except (RuntimeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f'the weights in {path!r} do not fit this model: '
                            f'{" ".join(str(e).split())[:200]}') from None
        self.args.init_from = os.path.abspath(path)
        self.args.init_from_epoch = source['epoch']

    def take_folder(self, run, resources, state):
        """Rank 0: take the run folder (RunFolder.take: the lock, the files already there),
        say what was done, and write the run's first files."""
        args = self.args
        note, stale = run.take(resources, state, args.overwrite, args.rewind)
        if note:
            print(note, flush=True)
        write_args(self.folder, args)
        if state is None:  # proves the folder takes a checkpoint before any work is done
            save_atomic(self.checkpoint_state(), self.path(CHECKPOINT))
            if run.init_from:
                print(f'New run in {self.folder} from the weights of {run.init_from} (epoch '
                      f'{args.init_from_epoch}); starting at epoch {self.epoch + 1}', flush=True)
        else:
            if stale or self.epoch >= args.epochs:  # the folder shows this state's run
                self.rewrite_files()
            print(f'Resuming {run.resume}: epoch {self.epoch + 1}, batch {self.step}, '
                  f'best {self.method.label(self.names[0])} test top-1 so far '
                  f'{self.best_acc:.2f}%', flush=True)
        self.set_status('running')

    def rewrite_files(self):
        """After --rewind: the checkpoint, logs and (if the state is its run's best so far)
        model_best.pth.tar of the state continued from."""
        key = f'test_acc_{self.names[0]}'
        accs = [row[key] for row in self.history]
        is_best = (self.step == 0 and bool(accs) and accs[-1] == self.best_acc
                   and max(accs[:-1], default=-1.0) < self.best_acc)
        if self.history:
            self.save_epoch(is_best and not os.path.exists(self.path(BEST)))
        else:
            save_atomic(self.checkpoint_state(), self.path(CHECKPOINT))

    def wrap(self, model):
        if self.world.distributed:
            device_ids = [self.device.index] if self.device.type == 'cuda' else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.args.compile else model

    def restore(self, state, path):
        """Continue from a checkpoint (checked by load_resumable)."""
        try:
            self.model.load_state_dict(state['state_dict'])
            self.optimizer.load_state_dict(state['optimizer'])
            if state.get('scaler'):
                self.scaler.load_state_dict(state['scaler'])
            self.epoch, self.step = int(state['epoch']), int(state['step'])
            self.best_acc, self.history = float(state['best_acc']), list(state['history'])
            self.partial = state['meters'] if self.world.is_main else None
            set_rng_states(state['rng'])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise UserError(f'{path!r} is damaged or does not fit this run: '
                            f'{" ".join(f"{type(e).__name__}: {e}".split())[:200]}') from None

    def checkpoint_state(self, meters=None):
        """Everything an uninterrupted run would still have in memory at this point."""
        return {'format': FORMAT_VERSION, **identity(self.args, self.method),
                RUN_ID: self.args.run_id, 'num_classes': self.data.num_classes, 'seed': self.seed,
                'epoch': self.epoch, 'step': self.step, 'best_acc': self.best_acc,
                'state_dict': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else None,
                'meters': meters.state() if meters is not None else None,
                'history': self.history, 'rng': rng_states(), 'args': vars(self.args),
                'listing': self.data.listing}

    def path(self, name):
        return os.path.join(self.folder, name)

    def set_status(self, state, message=''):
        """status.json, with the epochs saved (never one whose files could not be written)."""
        if self.world.is_main:
            write_status(self.folder, state, self.epochs_saved, self.args.epochs, message,
                         self.args.run_id)

    def run(self):
        """Train to the last epoch, recording in status.json how the run ended."""
        try:
            self.run_epochs()
        except Diverged as e:
            self.set_status('diverged', str(e))
            raise
        except Preempted as e:
            self.set_status('preempted', e.args[0])
            raise
        except UserError as e:
            self.set_status('failed', str(e))
            raise
        except BaseException as e:
            self.set_status('failed', ' '.join(f'{type(e).__name__}: {e}'.split())[:300])
            raise
        self.set_status('done')
        self.print_result()
        return 0

    def run_epochs(self):
        with StopRequest(self.device) as stop:
            while self.epoch < self.args.epochs:
                self.run_epoch(stop)
                if stop.signum:
                    raise Preempted(f'stopped by signal {stop.signum} after epoch {self.epoch}; '
                                    f'resume with --resume {self.path(CHECKPOINT)}', stop.signum)

    def say_what_it_would_do(self):
        """--check-only: every check has passed; nothing was written."""
        run = self.run_folder
        if run.resume:
            what = (f'would resume {run.resume} at epoch {self.epoch + 1}, batch {self.step}'
                    if self.epoch < self.args.epochs else
                    f'{run.resume} has trained all {self.args.epochs} epochs: would mark '
                    'it done')
        else:
            what = f'would start a new run in {self.folder} at epoch {self.epoch + 1}'
        print(f'check-only: {what}', flush=True)
        return 0

    def print_result(self):
        if self.world.is_main and self.history:
            print(result_line(self.history, self.names, self.method.label(self.names[0])))
            if self.graphed_step is not None:
                print(self.graphed_step.report())

    def run_epoch(self, stop):
        args, epoch = self.args, self.epoch
        lr = learning_rate(epoch, args.lr, args.schedule, args.gamma)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        start = time.time()
        train_meters = self.train_epoch(stop, lr)
        train = train_meters.summary(self.names)
        self.world.broadcast_buffers(self.model)
        test = evaluate(self.model, self.test_loader, self.method, self.objective, epoch,
                        self.names, self.world, args.amp, stop)
        if test is None:
            self.preempt_after_training(train_meters, stop.signum)
        self.report_skipped()
        row = {'epoch': epoch + 1, 'lr': lr, 'rampup': self.objective.rampup(epoch),
               'train_loss': train['loss'], 'test_loss': test['loss']}
        for key in ([f'acc_{n}' for n in self.names] + ['acc_mean']
                    + [f'acc5_{n}' for n in self.names]):
            row[f'train_{key}'], row[f'test_{key}'] = train[key], test[key]
        row['seconds'] = round(time.time() - start, 3)
        self.history.append(row)
        self.epoch, self.step = epoch + 1, 0
        first = f'test_acc_{self.names[0]}'
        is_best = row[first] > self.best_acc
        self.best_acc = max(self.best_acc, row[first])
        if self.world.is_main:
            self.save_epoch(is_best)
            self.set_status('running')  # now with this epoch done
            print(epoch_line(row, self.names, self.args.epochs, self.top5), flush=True)

    def report_skipped(self):
        """--bad-images skip: how many unreadable images this process has left out so far."""
        for split, loader in (('training', self.train_loader), ('test', self.test_loader)):
            if loader.skipped:
                print(f'--bad-images skip: {len(loader.skipped)} unreadable {split} image(s) '
                      f'left out so far (first: {loader.skipped[0]})', flush=True)

    def save_epoch(self, is_best):
        """The epoch's files, all or none (a full disk leaves every file as it was): the best
        model first, then the checkpoint, then the logs, so that a crash between the renames
        only repeats an epoch."""
        state = self.checkpoint_state()
        title = f'{self.method.title}: {self.args.arch}-{self.args.depth} on {self.args.dataset}'
        plot = (self.epoch >= self.args.epochs
                or time.monotonic() - self.plotted_at >= PLOT_EVERY_SECONDS)
        write_all_atomic([(self.path(name), checkpoint_writer(state))
                          for name in ([BEST] if is_best else []) + [CHECKPOINT]]
                         + run_files(self.folder, self.history, self.names, title, plot,
                                     self.top5))
        self.epochs_saved = len(self.history)
        self.saved_at = time.monotonic()
        if plot:
            self.plotted_at = time.monotonic()
        if self.args.tensorboard:
            from .tensorboard_log import write_tensorboard  # tensorboard is slow to import
            write_tensorboard(self.folder, self.history)

    def train_epoch(self, stop, lr):
        """Train over the rest of the epoch; returns its meters, summed over the ranks."""
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
        try:
            self.train_steps(meters, stop, lr, check_every, bar)
        except UnreadableImage as e:
            self.stop_at_unreadable(meters, e)
        if bar is not None:
            bar.finish()
        return meters.reduce(world)

    def train_steps(self, meters, stop, lr, check_every, bar):
        args, world, num_batches = self.args, self.world, len(self.train_loader)
        for step, (images, targets) in enumerate(
                self.train_loader.batches(self.epoch, self.step), self.step):
            global_size = min(args.train_batch, len(self.train_loader.labels) - step * args.train_batch)
            share = global_size / world.size
            if self.graphed_step is not None and global_size == args.train_batch:
                # the key: all the step takes from Python that can change (utils/graphs.py)
                key = (lr, self.objective.rampup(self.epoch), share)
                loss_sum, correct = self.graphed_step(key, images, targets, self.epoch, share)
            else:
                loss_sum, correct = self.train_and_count(images, targets, self.epoch, share)
            meters.update(loss_sum, correct, len(targets))
            self.step = step + 1
            if self.step % check_every == 0 or self.step == num_batches:
                self.check(meters, stop)
            if bar is not None:
                bar.next()

    def stop_at_unreadable(self, meters, error):
        """A training image that cannot be read (--bad-images stop): in one process, save the
        steps done so far, as a preemption does, then stop naming the image. (Under torchrun
        the other ranks wait in a collective: torchrun stops them, the last epoch's checkpoint
        stays.)"""
        if self.world.distributed:
            raise error
        state = self.checkpoint_state(meters)
        save_atomic(state, self.path(CHECKPOINT))
        raise UnreadableImage(f'{error}; the steps before it are saved in '
                              f'{self.path(CHECKPOINT)}: resume with --resume '
                              f'{self.path(CHECKPOINT)}') from None

    def train_and_count(self, images, targets, epoch, batch_size):
        """One optimizer step; returns (loss summed over the images, top-1 hits per column)."""
        output, loss_sum = self.method.train_step(
            self.train_model, self.objective, self.optimizer, self.scaler, images, targets,
            epoch, batch_size, self.args.amp)
        return loss_sum, self.method.correct(output, targets, self.names)

    def check(self, meters, stop):
        """Stop on a NaN/Inf loss (saving nothing) or, on a signal, save this step and stop;
        when --save-every-minutes have passed since the last save (on any rank's clock), save
        this step and go on."""
        flags = torch.stack([meters.nonfinite.to(torch.int64),
                             torch.tensor(stop.signum, device=self.device),
                             torch.tensor(int(self.save_due()), device=self.device)])
        nonfinite, signum, due = self.world.all_reduce(flags,
                                                       torch.distributed.ReduceOp.MAX).tolist()
        if nonfinite:
            kept = [path for path in map(self.path, (CHECKPOINT, BEST)) if os.path.exists(path)]
            raise Diverged(f'the loss became NaN or Inf in epoch {self.epoch + 1} (by batch '
                           f'{self.step}); the last good state is in '
                           f'{" and ".join(kept) or "no file (none was saved)"}')
        if signum and self.step < len(self.train_loader):
            self.preempt(meters.reduce(self.world), signum)
        if due and self.step < len(self.train_loader):
            self.save_step(meters.copy().reduce(self.world))

    def save_due(self):
        minutes = self.args.save_every_minutes
        return bool(minutes) and time.monotonic() - self.saved_at >= 60 * minutes

    def save_step(self, meters):
        """--save-every-minutes: this exact step (with the epoch's running sums, summed over
        the ranks) into the checkpoint, as a preemption saves it; training goes on."""
        if self.world.is_main:
            save_atomic(self.checkpoint_state(meters), self.path(CHECKPOINT))
        self.saved_at = time.monotonic()

    def preempt(self, meters, signum):
        """Save this exact step (with the epoch's running sums) and stop."""
        state = self.checkpoint_state(meters)
        if self.world.is_main:
            save_atomic(state, self.path(CHECKPOINT))
        raise Preempted(f'stopped by signal {signum} at epoch {self.epoch + 1}, batch '
                        f'{self.step}; saved {self.path(CHECKPOINT)}; resume with '
                        f'--resume {self.path(CHECKPOINT)}', signum)

    def preempt_after_training(self, train_meters, signum):
        """A signal during evaluation: save the trained epoch; resuming evaluates it."""
        self.preempt(train_meters, signum)


def train(args, method):
    with ExitStack() as resources:
        try:
            trainer = Trainer(args, method, resources)
        except AlreadyDone as e:
            if world_from_env().is_main:
                print(e.args[0], flush=True)
            return 0
        return trainer.say_what_it_would_do() if args.check_only else trainer.run()

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
from .checkpoint import check_identity, load_checkpoint, rng_states, set_rng_states
from .cli import build_parser, parse_flags
from .distributed import wait_for_rank_0, world_from_env
from .errors import UserError
from .graphs import GraphedStep
from .imagefolder import IMAGENET, UnreadableImage
from .logger import epoch_line, result_line
from .pack import (Pack, PackLoader, SharedBatches, member_optimizer_state, over_members,
                   pack_train_step, stack_optimizer_states)
from .records import BEST, CHECKPOINT
from .run_folder import AlreadyDone, RunFolder
from .run_state import Run, identity
from .schedule import learning_rate
from .setup import (build_model, build_optimizer, check_same_position, load_data, member_args,
                    seed_everything, setup)
from .steps import Meters, evaluate, member_columns, scorer
from .stops import Diverged, Preempted, StopRequest, quiet_unless, run_to_exit_code

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
    score = scorer(method, method.objective(args), state['epoch'], names)
    metrics = evaluate(model, data.test, score, names, world, args.amp)
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
            print(f'  {label:<{width}} {metrics[f"acc_{n}"]:6.2f}{fifth}')
    return 0


# ----------------------------------------------------------------------------- training

class Trainer:
    """One run, or a pack of runs that differ only by seed (--seeds; utils/pack.py), and the
    loop over their epochs. The model, optimizer, data and loop are the Trainer's; each run's
    flags, folder, history and files are its Run's (utils/run_state.py)."""

    def __init__(self, args, method, resources):
        """Check everything, load the data and build the runs in memory; only then take the
        run folders (lock, earlier files moved aside) and write their first files. A refusal
        therefore never leaves a file behind."""
        self.args, self.method = args, method
        self.objective = method.objective(args)
        self.world, self.device = setup(args, method)
        self.runs = build_runs(args, method)
        self.packed = len(self.runs) > 1
        check_same_position([run.state for run in self.runs], [run.folder for run in self.runs])
        state = self.runs[0].state
        run = self.runs[0].where
        source = (method.upgrade_checkpoint(load_checkpoint(run.init_from)) if run.init_from
                  else None)
        if source is not None:
            check_identity(source, run.init_from, identity(args, method), method.identity_assumed)
        if state is None and args.start_epoch >= args.epochs:
            raise UserError(f'--start-epoch {args.start_epoch} leaves nothing to train with '
                            f'--epochs {args.epochs}: it must be below --epochs')
        for member in self.runs:
            member.args.manualSeed = member.state['seed'] if member.state else (
                member.args.manualSeed if member.args.manualSeed is not None
                else random.randint(1, 10000))
        seed_everything(self.runs[0].seed)

        self.data = load_data(args, self.device, self.world, method.views(args),
                              resumed=(state, run.resume) if state is not None else None,
                              runs=[member.args for member in self.runs])
        if args.train_subset > len(self.data.train.labels):
            raise UserError(f'--train-subset {args.train_subset} is larger than {args.dataset}\'s '
                            f'{len(self.data.train.labels)} training images: use at most that '
                            '(or 0 for all)')
        self.model = self.build_models()
        self.train_loader, self.test_loader = self.loaders()
        self.optimizer = build_optimizer(args, self.model, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=args.amp == 'fp16')
        self.names = method.columns(args)
        self.top5 = args.dataset == IMAGENET   # shown in log.txt and the epoch lines
        self.epoch, self.step = args.start_epoch, 0
        self.saved_at = time.monotonic()   # the last checkpoint, for --save-every-minutes
        if state is not None:
            self.restore()
        elif source is not None:
            self.init_weights(source, run.init_from)
        if args.check_only:
            return
        self.train_model = self.wrap(self.model)
        self.train_step = pack_train_step if self.packed else method.train_step
        self.graphed_step = GraphedStep(self.train_and_count) if args.cuda_graphs else None
        # the ramp-up weight as a graph reads it: set before each epoch, one graph for them all
        self.weight = torch.zeros((), device=self.device) if args.cuda_graphs else None
        # ---- nothing above has written a file; everything below writes into the run folders
        if self.world.is_main:   # every folder locked and checked before any is written
            for member in self.runs:
                member.where.lock(resources, member.state, args.overwrite, args.rewind)
            for member in self.runs:
                self.take_folder(member)

    def build_models(self):
        """The model: for a pack, each run's built from its own seed exactly as the run alone
        builds it (its RNG states then kept as that run's), stacked."""
        args, method = self.args, self.method
        if not self.packed:
            return build_model(args, method, self.data.num_classes, self.device)
        models = []
        for run in self.runs:
            seed_everything(run.seed)
            models.append(build_model(run.args, method, self.data.num_classes, self.device))
            run.rng = rng_states()
        return Pack(models)

    def loaders(self):
        """(training, test) loaders: for a pack, each run's training batches from its own seed,
        stacked, and every test batch given to every run."""
        train, test = self.data.train, self.data.test
        if not self.packed:
            train.seed = self.runs[0].seed
            return train, test
        return (PackLoader(train, [run.seed for run in self.runs]),
                SharedBatches(test, len(self.runs)))

    def init_weights(self, source, path):
        """--init-from: a new run from another checkpoint's weights only."""
        try:
            self.model.load_state_dict(source['state_dict'])
        except (RuntimeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f'the weights in {path!r} do not fit this model: '
                            f'{" ".join(str(e).split())[:200]}') from None
        self.args.init_from = os.path.abspath(path)
        self.args.init_from_epoch = source['epoch']

    def take_folder(self, run):
        """Rank 0: take a run's folder (locked) and write its first files."""
        stale = run.take()
        if run.state is None:  # proves the folder takes a checkpoint before any work is done
            run.save_checkpoint(self.checkpoint_state(run))
            if run.where.init_from:
                print(f'New run in {run.folder} from the weights of {run.where.init_from} (epoch '
                      f'{run.args.init_from_epoch}); starting at epoch {self.epoch + 1}',
                      flush=True)
        else:
            if stale or self.epoch >= self.args.epochs:  # the folder shows this state's run
                self.rewrite_files(run)
            print(f'Resuming {run.where.resume}: epoch {self.epoch + 1}, batch {self.step}, '
                  f'best {self.method.label(self.names[0])} test top-1 so far '
                  f'{run.best_acc:.2f}%', flush=True)
        run.set_status('running')

    def rewrite_files(self, run):
        """After --rewind: the checkpoint, logs and (if the state is its run's best so far)
        model_best.pth.tar of the state continued from."""
        if run.history:
            is_best = run.is_best_so_far(self.step)
            self.save_epoch([run], [is_best and not os.path.exists(run.path(BEST))])
        else:
            run.save_checkpoint(self.checkpoint_state(run))

    def wrap(self, model):
        if self.world.distributed:
            device_ids = [self.device.index] if self.device.type == 'cuda' else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        return torch.compile(model) if self.args.compile else model

    def restore(self):
        """Continue from the runs' checkpoints (checked by Run.load_resumable)."""
        states = [run.state for run in self.runs]
        try:
            if self.packed:
                for i, state in enumerate(states):
                    self.model.load_member_state_dict(i, state['state_dict'])
                self.optimizer.load_state_dict(
                    stack_optimizer_states([state['optimizer'] for state in states]))
            else:
                self.model.load_state_dict(states[0]['state_dict'])
                self.optimizer.load_state_dict(states[0]['optimizer'])
            if states[0].get('scaler'):
                self.scaler.load_state_dict(states[0]['scaler'])
            self.epoch, self.step = int(states[0]['epoch']), int(states[0]['step'])
            for run in self.runs:
                run.restore(self.world.is_main)
                if self.packed:
                    run.rng = run.state['rng']
                else:
                    set_rng_states(run.state['rng'])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise UserError(f'{self.runs[0].where.resume!r} is damaged or does not fit this run: '
                            f'{" ".join(f"{type(e).__name__}: {e}".split())[:200]}') from None

    def model_state(self, i):
        """Run i's weights and optimizer state, as a run trained alone holds them."""
        if not self.packed:
            return {'state_dict': self.model.state_dict(),
                    'optimizer': self.optimizer.state_dict()}
        return {'state_dict': self.model.member_state_dict(i),
                'optimizer': member_optimizer_state(self.optimizer.state_dict(), i)}

    def checkpoint_state(self, run, meters=None):
        """Everything an uninterrupted run would still have in memory at this point."""
        i = self.runs.index(run)
        shared = {'num_classes': self.data.num_classes, 'epoch': self.epoch, 'step': self.step,
                  'scaler': self.scaler.state_dict() if self.scaler.is_enabled() else None,
                  'listing': self.data.listing}
        own = None if meters is None else meters.member(i)
        return run.checkpoint_state(shared, self.model_state(i), own)

    def set_status(self, state, message=''):
        if self.world.is_main:
            for run in self.runs:
                run.set_status(state, message)

    def run(self):
        """Train to the last epoch, recording in status.json how the runs ended."""
        try:
            self.run_epochs()
        except Diverged as e:
            self.set_diverged(e)
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

    def set_diverged(self, error):
        """status.json after a NaN or Inf loss: diverged for the runs whose loss it was (a
        relaunched sweep leaves them); a pack's other runs failed, stopped with it, so that a
        relaunch continues them from their last epoch."""
        if not self.world.is_main:
            return
        for run in self.runs:
            if error.seeds is None or run.seed in error.seeds:
                run.set_status('diverged', str(error))
            else:
                run.set_status('failed', f'stopped with its pack: {error}')

    def resume_hint(self):
        """The command-line change that continues the runs after a stop."""
        if self.packed:
            return f'--resume auto (the same --seeds and -c)'
        return f'--resume {self.runs[0].path(CHECKPOINT)}'

    def run_epochs(self):
        with StopRequest(self.device) as stop:
            while self.epoch < self.args.epochs:
                self.run_epoch(stop)
                if stop.signum:
                    raise Preempted(f'stopped by signal {stop.signum} after epoch {self.epoch}; '
                                    f'resume with {self.resume_hint()}', stop.signum)

    def say_what_it_would_do(self):
        """--check-only: every check has passed; nothing was written."""
        for run in self.runs:
            where = run.where
            if where.resume:
                what = (f'would resume {where.resume} at epoch {self.epoch + 1}, batch '
                        f'{self.step}' if self.epoch < self.args.epochs else
                        f'{where.resume} has trained all {self.args.epochs} epochs: would mark '
                        'it done')
            else:
                what = f'would start a new run in {run.folder} at epoch {self.epoch + 1}'
            print(f'check-only: {what}', flush=True)
        return 0

    def print_result(self):
        if self.world.is_main:
            for run in self.runs:
                if run.history:
                    print(self.prefix(run) + result_line(run.history, self.names,
                                                         self.method.label(self.names[0])))
            if self.graphed_step is not None:
                print(self.graphed_step.report())

    def prefix(self, run):
        return f'[seed {run.seed}] ' if self.packed else ''

    def run_epoch(self, stop):
        args, epoch = self.args, self.epoch
        lr = learning_rate(epoch, args.lr, args.schedule, args.gamma)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        if self.weight is not None:
            self.weight.fill_(self.objective.rampup(epoch))
        start = time.time()
        train_meters = self.train_epoch(stop, lr)
        self.world.broadcast_buffers(self.model)
        members = len(self.runs) if self.packed else None
        tests = evaluate(self.model, self.test_loader,
                         scorer(self.method, self.objective, epoch, self.names, self.packed),
                         self.names, self.world, args.amp, stop, members)
        if tests is None:   # a signal during evaluation: the trained epoch, evaluated on resume
            self.preempt(train_meters, stop.signum)
        self.report_skipped()
        seconds = round(time.time() - start, 3)
        self.epoch, self.step = epoch + 1, 0
        rows, best = [], []
        for i, run in enumerate(self.runs):
            train = train_meters.member(i).summary(self.names)
            rows.append(self.epoch_row(epoch, lr, train, tests[i] if self.packed else tests,
                                       seconds))
            best.append(run.record(rows[-1]))
        if self.world.is_main:
            self.save_epoch(self.runs, best)
            for run, row in zip(self.runs, rows):
                run.set_status('running')  # now with this epoch done
                print(self.prefix(run) + epoch_line(row, self.names, args.epochs, self.top5),
                      flush=True)

    def epoch_row(self, epoch, lr, train, test, seconds):
        row = {'epoch': epoch + 1, 'lr': lr, 'rampup': self.objective.rampup(epoch),
               'train_loss': train['loss'], 'test_loss': test['loss']}
        for key in ([f'acc_{n}' for n in self.names] + ['acc_mean']
                    + [f'acc5_{n}' for n in self.names]):
            row[f'train_{key}'], row[f'test_{key}'] = train[key], test[key]
        row['seconds'] = seconds
        return row

    def report_skipped(self):
        """--bad-images skip: how many unreadable images this process has left out so far."""
        for split, loader in (('training', self.train_loader), ('test', self.test_loader)):
            if loader.skipped:
                print(f'--bad-images skip: {len(loader.skipped)} unreadable {split} image(s) '
                      f'left out so far (first: {loader.skipped[0]})', flush=True)

    def save_epoch(self, runs, best):
        """The epoch's files of every run, all or none (a full disk leaves every run at its
        last epoch, so a pack still continues as a whole)."""
        files, done = [], []
        for run, is_best in zip(runs, best):
            run_files, saved = run.epoch_files(self.checkpoint_state(run), is_best, self.top5)
            files += run_files
            done.append(saved)
        write_all_atomic(files)
        for saved in done:
            saved()
        self.saved_at = time.monotonic()

    def save_checkpoints(self, meters=None):
        """Each run's checkpoint.pth.tar at this exact step, all or none."""
        write_all_atomic([run.checkpoint_file(self.checkpoint_state(run, meters))
                          for run in self.runs])

    def train_epoch(self, stop, lr):
        """Train over the rest of the epoch; returns its meters, summed over the ranks."""
        device, world = self.device, self.world
        self.train_model.train()
        meters = Meters(len(self.names), device, len(self.runs) if self.packed else None)
        for i, run in enumerate(self.runs):
            if run.partial is not None:
                meters.member(i).load(run.partial)
                run.partial = None
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
                # the key: all the step takes from Python that can change (utils/graphs.py);
                # the ramp-up weight is read from self.weight
                key = (lr, share)
                loss_sum, correct = self.graphed_step(key, images, targets, self.epoch, share,
                                                      self.weight)
            else:
                loss_sum, correct = self.train_and_count(images, targets, self.epoch, share)
            meters.update(loss_sum, correct, targets.shape[-1])
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
        run = self.runs[0]          # ImageNet runs are never packed
        run.save_checkpoint(self.checkpoint_state(run, meters))
        raise UnreadableImage(f'{error}; the steps before it are saved in '
                              f'{run.path(CHECKPOINT)}: resume with --resume '
                              f'{run.path(CHECKPOINT)}') from None

    def train_and_count(self, images, targets, epoch, batch_size, weight=None):
        """One optimizer step; returns (loss summed over the images, top-1 and top-5 hits per
        column), each with a leading dimension of k for a pack. `weight`: the ramp-up weight
        as a tensor (a graph's), else the objective's rampup(epoch)."""
        output, loss_sum = self.train_step(
            self.train_model, self.objective, self.optimizer, self.scaler, images, targets,
            epoch, batch_size, self.args.amp, weight)
        if self.packed:
            return loss_sum, over_members(
                lambda out, y: self.method.correct(out, y, self.names), output, targets)
        return loss_sum, self.method.correct(output, targets, self.names)

    def check(self, meters, stop):
        """Stop on a NaN/Inf loss (saving nothing) or, on a signal, save this step and stop;
        when --save-every-minutes have passed since the last save (on any rank's clock), save
        this step and go on."""
        flags = torch.stack([meters.nonfinite.any().to(torch.int64),
                             torch.tensor(stop.signum, device=self.device),
                             torch.tensor(int(self.save_due()), device=self.device)])
        nonfinite, signum, due = self.world.all_reduce(flags,
                                                       torch.distributed.ReduceOp.MAX).tolist()
        if nonfinite:
            raise Diverged(self.divergence(meters), [run.seed for run in self.diverged(meters)]
                           if self.packed else None)
        if signum and self.step < len(self.train_loader):
            self.preempt(meters.reduce(self.world), signum)
        if due and self.step < len(self.train_loader):
            self.save_step(meters.copy().reduce(self.world))

    def divergence(self, meters):
        """What a NaN or Inf loss stopped, and where each run's last good state is."""
        where = f'in epoch {self.epoch + 1} (by batch {self.step})'
        if not self.packed:
            run = self.runs[0]
            kept = [path for path in map(run.path, (CHECKPOINT, BEST)) if os.path.exists(path)]
            return (f'the loss became NaN or Inf {where}; the last good state is in '
                    f'{" and ".join(kept) or "no file (none was saved)"}')
        bad = self.diverged(meters)
        return (f'the loss of seed {", ".join(str(run.seed) for run in bad)} became NaN or Inf '
                f'{where}, which stops the pack; every run keeps the checkpoint.pth.tar of its '
                'last epoch: continue the others with --resume auto and --seeds without '
                f'{"it" if len(bad) == 1 else "them"}')

    def diverged(self, meters):
        """The runs of a pack whose loss became NaN or Inf."""
        return [run for run, nonfinite in zip(self.runs, meters.nonfinite.tolist()) if nonfinite]

    def save_due(self):
        minutes = self.args.save_every_minutes
        return bool(minutes) and time.monotonic() - self.saved_at >= 60 * minutes

    def save_step(self, meters):
        """--save-every-minutes: this exact step (with the epoch's running sums, summed over
        the ranks) into each run's checkpoint, as a preemption saves it; training goes on."""
        if self.world.is_main:
            self.save_checkpoints(meters)
        self.saved_at = time.monotonic()

    def preempt(self, meters, signum):
        """Save this exact step (with the epoch's running sums) and stop."""
        if self.world.is_main:
            self.save_checkpoints(meters)
        saved = ', '.join(run.path(CHECKPOINT) for run in self.runs)
        raise Preempted(f'stopped by signal {signum} at epoch {self.epoch + 1}, batch '
                        f'{self.step}; saved {saved}; resume with {self.resume_hint()}', signum)



def build_runs(args, method):
    """The Run of each run the command trains (one, or a pack's), every one checked before
    anything is written. AlreadyDone when every run has trained all its epochs; a pack with
    some done and some not is refused (it continues as a whole)."""
    runs, done = [], []
    for run_args in member_args(args):
        try:
            runs.append(Run(run_args, method, RunFolder.from_args(run_args)))
        except AlreadyDone as e:
            done.append((run_args, e.args[0]))
    if done and not runs:
        raise AlreadyDone('\n'.join(line for _, line in done))
    if done:
        left = ' '.join(str(run.seed) for run in runs)
        raise UserError(f'--seeds: seed(s) {" ".join(str(a.manualSeed) for a, _ in done)} have '
                        'trained all their epochs while the others have not: a pack continues '
                        f'as a whole; continue the others with --seeds {left}')
    return runs


def train(args, method):
    with ExitStack() as resources:
        try:
            trainer = Trainer(args, method, resources)
        except AlreadyDone as e:
            if world_from_env().is_main:
                print(e.args[0], flush=True)
            return 0
        return trainer.say_what_it_would_do() if args.check_only else trainer.run()

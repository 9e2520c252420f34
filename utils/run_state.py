"""One run's own state and files, as the engine keeps them: its flags, folder, seed, metric
history and best accuracy, its checkpoints, logs and status.json.

A Trainer (utils/engine.py) trains one run, or a pack of runs that differ only by seed
(utils/pack.py) in one process: the model, optimizer and loop are the Trainer's, and what is
here is each run's alone, so that every run of a pack writes the ordinary run folder of a run
trained by itself.
"""
import os
import time

from .checkpoint import (FORMAT_VERSION, TRAINING, check_identity, check_keys, checkpoint_writer,
                         load_checkpoint, rng_states, save_atomic)
from .cli import changed_flags
from .errors import UserError
from .logger import run_files, write_args
from .records import BEST, CHECKPOINT, RUN_ID, write_status
from .run_folder import new_run_id

# curves.png is redrawn after an epoch at most this often, and after the last epoch: drawing
# takes about 0.3 s, as long as a whole epoch of CIFAR on a large GPU (and a curve of one
# epoch shows nothing).
PLOT_EVERY_SECONDS = 30
# Kept from a run's first command whatever a later one says (--resume overrides --start-epoch;
# data_copy: setup.record_data_copy refuses to continue on another copy).
FIRST_COMMAND = ('start_epoch', 'init_from', 'init_from_epoch', 'data_copy')


def identity(args, method):
    """What must agree between a checkpoint and the run that loads it."""
    return dict(method=method.name, arch=args.arch, depth=args.depth, dataset=args.dataset,
                **method.identity(args))


class Run:
    """One run: its own `args` (its seed, its folder), its RunFolder `where`, the checkpoint
    it continues (`state`, checked before anything is written), and what it has done: its
    history, best accuracy and the epochs its files hold (`saved`: never one whose files could
    not be written)."""

    def __init__(self, args, method, where):
        self.args, self.method, self.where = args, method, where
        self.folder = args.checkpoint = where.folder
        self.state = self.load_resumable() if where.resume else None
        if self.state is None:
            args.run_id = new_run_id()
        self.history, self.best_acc, self.saved = [], 0.0, 0
        self.partial = None          # the running sums of a checkpoint saved mid-epoch
        self.rng = None              # a packed run's RNG states, as the run alone would have them
        self.plotted_at = time.monotonic()   # the first curves.png: 30 s in, or at the end

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def seed(self):
        return self.args.manualSeed

    def load_resumable(self):
        """The checkpoint to continue, checked before anything is written: its model
        (identity), its keys, and what the run folder requires (RunFolder.check_continuation:
        its own run, unchanged flags, no rewind unasked, no shortening)."""
        args, method, path = self.args, self.method, self.where.resume
        state = method.upgrade_checkpoint(load_checkpoint(path))
        check_identity(state, path, identity(args, method), method.identity_assumed)
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
        changed = changed_flags(method, saved, args)
        if args.manualSeed is not None and args.manualSeed != state['seed']:
            changed.append(('--manualSeed', state['seed'], args.manualSeed))
        args.run_id = self.where.check_continuation(state, changed, args.rewind, args.epochs)
        return state

    def restore(self, is_main):
        """What the run had done, from the checkpoint it continues."""
        state = self.state
        self.history, self.best_acc = list(state['history']), float(state['best_acc'])
        self.partial = state['meters'] if is_main else None
        self.saved = len(self.history)

    def checkpoint_state(self, shared, model_state, meters=None):
        """Everything the run would still have in memory at this point: what the trainer
        shares among its runs (`shared`: epoch, batch, classes, ...), the run's weights and
        optimizer state (`model_state`) and, mid-epoch, its running sums (`meters`)."""
        return {'format': FORMAT_VERSION, **identity(self.args, self.method),
                RUN_ID: self.args.run_id, 'seed': self.seed, 'best_acc': self.best_acc,
                **shared, **model_state, 'meters': meters.state() if meters is not None else None,
                'history': self.history, 'rng': self.rng or rng_states(), 'args': vars(self.args)}

    def take(self):
        """Rank 0, just before the first write, its folder locked: take the run folder
        (RunFolder.take: the files already there), say what was done, write args.json.
        Returns the files a --rewind moved aside."""
        note, stale = self.where.take(self.state, self.args.overwrite)
        if note:
            print(note, flush=True)
        write_args(self.folder, self.args)
        return stale

    def save_checkpoint(self, state):
        save_atomic(state, self.path(CHECKPOINT))

    def checkpoint_file(self, state):
        """(path, writer) of checkpoint.pth.tar holding `state`."""
        return self.path(CHECKPOINT), checkpoint_writer(state)

    @property
    def best_key(self):
        """The history's column that model_best.pth.tar follows: column 1's test accuracy."""
        return f'test_acc_{self.method.columns(self.args)[0]}'

    def record(self, row):
        """Append an epoch's row; returns whether column 1's test accuracy is the best yet."""
        self.history.append(row)
        is_best = row[self.best_key] > self.best_acc
        self.best_acc = max(self.best_acc, row[self.best_key])
        return is_best

    def is_best_so_far(self, step):
        """Whether the state continued from (at batch `step`) is the run's best so far: what
        a --rewind rewrites model_best.pth.tar from."""
        accs = [row[self.best_key] for row in self.history]
        return (step == 0 and bool(accs) and accs[-1] == self.best_acc
                and max(accs[:-1], default=-1.0) < self.best_acc)

    def epoch_files(self, state, is_best, top5):
        """(path, writer) of the epoch's files, to be written all or none
        (utils/atomic.write_all_atomic): the best model first, then the checkpoint, then the
        logs, so that a crash between the renames only repeats an epoch; and what to do once
        they are written."""
        args, names = self.args, self.method.columns(self.args)
        title = f'{self.method.title}: {args.arch}-{args.depth} on {args.dataset}'
        plot = (state['epoch'] >= args.epochs
                or time.monotonic() - self.plotted_at >= PLOT_EVERY_SECONDS)
        files = ([(self.path(name), checkpoint_writer(state))
                  for name in ([BEST] if is_best else []) + [CHECKPOINT]]
                 + run_files(self.folder, self.history, names, title, plot, top5))
        return files, lambda: self.saved_epoch(plot)

    def saved_epoch(self, plotted):
        self.saved = len(self.history)
        if plotted:
            self.plotted_at = time.monotonic()
        if self.args.tensorboard:
            from .tensorboard_log import write_tensorboard  # tensorboard is slow to import
            write_tensorboard(self.folder, self.history)

    def set_status(self, state, message=''):
        """status.json, with the epochs saved."""
        write_status(self.folder, state, self.saved, self.args.epochs, message, self.args.run_id)

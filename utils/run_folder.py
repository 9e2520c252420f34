"""The run folder: which one a run writes to, whether it may, and its status.json.

Three ways to start, and what each may do to the files already there:

- a new run (no --resume, or --resume auto without a checkpoint), optionally from another
  checkpoint's weights (--init-from PATH): refused in a folder that holds a run, unless
  --overwrite, which first moves that run's files into FOLDER/previous-YYYYmmdd-HHMMSS/. A
  folder whose run never trained (a start that failed before its first batch was saved) is
  not a run: its files are replaced.
- continuing a run (--resume PATH, --resume auto): in PATH's folder, which -c may name but not
  contradict. Continuing from a file older than the folder's newest state (model_best.pth.tar
  while checkpoint.pth.tar is later) would step the run back: refused unless --rewind, which
  first moves the newer files into FOLDER/previous-YYYYmmdd-HHMMSS/.

A folder continues only its own run. Every run gets an id when it starts (new_run_id), kept
in args.json, status.json and every checkpoint; a checkpoint of another run (copied into the
folder, say) is refused, pointing to --init-from (run_id_to_continue).

Every decision here is taken before anything is written, and taken again once the run holds
the folder's lock (utils/runlock.py), just before its first write.
"""
import os
import secrets
import shutil
import time

from .atomic import is_temporary
from .checkpoint import folder_given, load_checkpoint
from .errors import UserError
from .records import (ARGS, BEST, CHECKPOINT, LOG, PLOT, PREVIOUS, RUN_ID, STATUS, SUMMARY,
                      TENSORBOARD, read_json_record)
from .runlock import hold_run_lock

RUN_FILES = (CHECKPOINT, BEST, LOG, SUMMARY, PLOT, ARGS, STATUS, TENSORBOARD)
# Written only once an epoch is done: a folder with one of them holds a run's results.
RESULTS = (BEST, LOG, SUMMARY, PLOT, TENSORBOARD)
# Describe a run's history; regenerated from the checkpoint, so moved aside with a newer state.
HISTORY_FILES = (LOG, SUMMARY, PLOT, ARGS, STATUS, TENSORBOARD)


class AlreadyDone(Exception):
    """A finished run continued with no more epochs: the line to print; nothing is written."""


class RunFolder:
    """The folder a run writes to, what the run starts from (`resume`: a checkpoint continued
    in place; `init_from`: one whose weights start a new run), and the rules of the module's
    docstring: from_args and check_continuation decide before anything is written; take
    decides again under the folder's lock, just before the first write."""

    def __init__(self, folder, resume=None, init_from=None):
        self.folder, self.resume, self.init_from = folder, resume, init_from
        self.resume_fingerprint = fingerprint(resume) if resume else None
        self.stale = []   # what lock() found a --rewind must move aside

    @classmethod
    def from_args(cls, args):
        """Refuses contradictory flags and a new run over a run."""
        return cls(*_resolve(args))

    def path(self, name):
        return os.path.join(self.folder, name)

    def check_continuation(self, state, changed, rewind, epochs):
        """Continuing `state` (read from self.resume) is refused, before anything is written,
        when the folder's records belong to another run, when `changed` lists flags that
        differ from the run's ([(flag, old, new)]: a run keeps the schedule and objective it
        started with), when it would step back unasked (--rewind) or shorten the run.
        AlreadyDone when nothing is left to do. Returns the run's id."""
        run_id = run_id_to_continue(self, state)
        if changed:
            raise UserError(
                f'{self.resume!r} continues a run trained with '
                f'{", ".join(f"{flag} {old}" for flag, old, _ in changed)}, not '
                f'{", ".join(f"{flag} {new}" for flag, _, new in changed)}: a run keeps the '
                'schedule and objective it started with. Continue it with its own values (see '
                f'its args.json), or start a new run from its weights with --init-from '
                f'{self.resume} -c NEW_FOLDER')
        files_to_rewind(self, state, rewind)
        self.check_epochs_left(state, epochs, run_id)
        return run_id

    def check_epochs_left(self, state, epochs, run_id):
        """A run is never shortened: --epochs below the epochs trained is refused, nothing
        written. A run that has trained exactly --epochs and says so in status.json is left
        as it is (AlreadyDone); one whose end was not recorded (stopped after its last save)
        is finished: its files are rewritten from the checkpoint and it is marked done."""
        if position(state) > (epochs, 0):
            least = state['epoch'] + (1 if state['step'] else 0)
            raise UserError(f'{self.resume!r} has trained {describe_position(state)}, more than '
                            f'--epochs {epochs}: a run is never shortened, nothing was changed. '
                            f'Continue it with --epochs {least} or more')
        status = read_json_record(self.path(STATUS)) or {}
        if (position(state) == (epochs, 0) and status.get('state') == 'done'
                and status.get('epochs') == epochs and status.get(RUN_ID) in (None, run_id)):
            raise AlreadyDone(f'{self.folder}: the run has already trained its {epochs} epochs; '
                              'nothing to do (no file was touched)')

    def lock(self, resources, state, overwrite, rewind):
        """Rank 0, before the first write: lock the folder (released with `resources`) and
        decide again under the lock whether the files already there may be kept, moved aside
        or continued; nothing is changed yet. (A pack locks every run's folder before it
        writes into any.)"""
        check_writable(self.folder)
        resources.enter_context(hold_run_lock(self.folder))
        if self.resume and fingerprint(self.resume) != self.resume_fingerprint:
            raise UserError(f'{self.resume!r} changed while this run was starting (another '
                            'run wrote it); start again to continue from its new state')
        if state is None:
            present, trained = existing_run(self.folder)
            if trained and not overwrite:
                raise UserError(_holds_a_run(self.folder, present))
        else:
            run_id_to_continue(self, state)   # refuses another run's files, now under the lock
            self.stale = files_to_rewind(self, state, rewind)

    def take(self, state, overwrite):
        """Rank 0, just before the first write, the folder locked (lock()): do what the files
        already there call for. Returns (the line saying what was done or None, the files a
        rewind moved aside)."""
        remove_temporaries(self.folder)
        if state is None:
            return make_room(self.folder, overwrite), []
        stale = self.stale
        if not stale:
            return None, []
        return (f'--rewind: {self.folder} steps back to {describe_position(state)} of '
                f'{self.resume}; the newer files ({", ".join(stale)}) are in '
                f'{move_aside(self.folder, stale)}'), stale


def default_folder(args):
    return os.path.join('checkpoints', args.dataset, f'{args.arch}-{args.depth}')


def _same_folder(a, b):
    return os.path.realpath(a or '.') == os.path.realpath(b or '.')


def _check_file(flag, path):
    if os.path.isdir(path):
        raise UserError(folder_given(flag, path, f'--resume auto -c {path}'
                                     if flag == '--resume' else ''))
    if not os.path.exists(path):
        raise UserError(f'{flag}: checkpoint {path!r} does not exist')


def _resolve(args):
    """(folder, resume, init_from) from the flags; refuses contradictory flags and a new run
    over a run (see the module's docstring)."""
    init_from = getattr(args, 'init_from', None)
    if args.resume and init_from:
        raise UserError('--resume continues a run in its folder and --init-from starts a new '
                        'run from a checkpoint\'s weights: pass one of them')
    if args.resume and args.overwrite:
        raise UserError('--overwrite starts a new run and --resume continues one: pass one '
                        'of them')
    if getattr(args, 'rewind', False) and args.resume in ('', 'auto'):
        raise UserError('--rewind only applies to --resume PATH, to continue a run from a '
                        'checkpoint older than its checkpoint.pth.tar (e.g. model_best.pth.tar)')
    if args.resume and args.resume != 'auto':
        _check_file('--resume', args.resume)
        folder = os.path.dirname(args.resume) or '.'
        if args.checkpoint and not _same_folder(args.checkpoint, folder):
            raise UserError(f'--resume continues the run in {folder!r}, the folder of '
                            f'{args.resume!r}, but -c names {args.checkpoint!r}; to start a new '
                            f'run there from its weights use --init-from {args.resume} -c '
                            f'{args.checkpoint}')
        return folder, args.resume, None
    folder = args.checkpoint or default_folder(args)
    if args.resume == 'auto' and os.path.exists(os.path.join(folder, CHECKPOINT)):
        return folder, os.path.join(folder, CHECKPOINT), None
    if init_from:
        _check_file('--init-from', init_from)
    present, trained = existing_run(folder)
    if trained and not args.overwrite:
        raise UserError(_holds_a_run(folder, present))
    return folder, None, init_from


def _holds_a_run(folder, present):
    if CHECKPOINT in present:
        how = f'continue it with --resume {os.path.join(folder, CHECKPOINT)} (or --resume auto), '
    elif BEST in present:
        how = f'continue it from its best epoch with --resume {os.path.join(folder, BEST)}, '
    else:
        how = ''
    return (f'{folder!r} already holds a run ({", ".join(present)}); {how}start over with '
            '--overwrite (its files are moved aside), or choose another --checkpoint')


def existing_run(folder):
    """(the run files present in FOLDER, whether they hold anything trained). A checkpoint
    at batch 0 with no epoch done, and nothing else but args.json and status.json, is what
    a start that failed before training leaves: it holds nothing to keep."""
    present = [name for name in RUN_FILES if os.path.exists(os.path.join(folder, name))]
    trained = any(name in RESULTS for name in present)
    if CHECKPOINT in present and not trained:
        try:
            state = load_checkpoint(os.path.join(folder, CHECKPOINT), required=('history', 'step'))
            trained = bool(state['history'] or state['step'])
        except UserError:
            trained = True  # unreadable: nothing says it is safe to replace
    return present, trained


def position(state):
    return state['epoch'], state.get('step', 0)


def describe_position(state):
    epoch, step = position(state)
    return f'epoch {epoch}' + (f' + {step} batches' if step else '')


def other_checkpoints(run):
    """The folder's checkpoints besides run.resume: [(name, state or None if unreadable or
    incomplete)]."""
    found = []
    for name in (CHECKPOINT, BEST):
        path = os.path.join(run.folder, name)
        if not os.path.exists(path) or os.path.samefile(path, run.resume):
            continue
        try:
            found.append((name, load_checkpoint(path, required=('epoch', 'state_dict'))))
        except UserError:
            found.append((name, None))
    return found


def newer_states(run, state):
    """The folder's checkpoints holding a later point of the run than run.resume (`state`):
    [(name, state or None if unreadable)]. The folder's own checkpoint.pth.tar is its run's
    current state by definition (a crash between writing model_best.pth.tar and it leaves
    the best one epoch ahead, and continuing repeats that epoch): nothing is newer."""
    own = os.path.join(run.folder, CHECKPOINT)
    if os.path.exists(own) and os.path.samefile(own, run.resume):
        return []
    return [(name, other) for name, other in other_checkpoints(run)
            if other is None or position(other) > position(state)]


def new_run_id():
    """A run's name for good: when it started, then random bits (from the OS, not `random`,
    whose state is part of the run) so that no two runs share one."""
    return f'{time.strftime("%Y%m%d-%H%M%S")}-{secrets.token_hex(4)}'


def run_records(run):
    """What the folder says of its run besides run.resume: [(name, dict)] of its other
    checkpoints, args.json and status.json (an unreadable one says nothing). A
    model_best.pth.tar that is not a checkpoint is refused: continuing would go on as if the
    best epoch's weights were kept."""
    records = []
    for name, state in other_checkpoints(run):
        if state is None and name == BEST:
            raise UserError(damaged_best(run.path(BEST)))
        if state is not None:
            records.append((name, state))
    for name in (ARGS, STATUS):
        record = read_json_record(os.path.join(run.folder, name))
        if record is not None:
            records.append((name, record))
    return records


def damaged_best(path):
    return (f'{path} is not a readable checkpoint (damaged, or not saved by this project), so '
            "the run's best epoch so far is not kept: move it aside (e.g. to "
            f'{path}.damaged) and continue; model_best.pth.tar is written again when an epoch '
            'beats the best test accuracy so far')


def _seed(record):
    return record.get('seed', record.get('manualSeed'))


def _same_lineage(state, record):
    """For records without an id: the same seed, and the same epoch history up to the
    shorter one (seconds aside: two runs with equal histories are the same training)."""
    if _seed(record) is not None and _seed(record) != _seed(state):
        return False
    ours, theirs = state.get('history'), record.get('history')
    if not (isinstance(ours, list) and isinstance(theirs, list)):
        return True
    n = min(len(ours), len(theirs))
    strip = (lambda rows: [{k: v for k, v in row.items() if k != 'seconds'}
                           if isinstance(row, dict) else row for row in rows[:n]])
    return strip(ours) == strip(theirs)


def describe_run(record):
    run_id, seed = record.get(RUN_ID), _seed(record)
    text = f'run {run_id}' if run_id else 'a run saved without an id'
    return text + (f' (seed {seed})' if seed is not None else '')


def run_id_to_continue(run, state):
    """The id of the run that continuing run.resume (`state`) continues, or a UserError when
    the folder's other records (checkpoints, args.json, status.json) belong to another run.

    Checkpoints and records saved before runs had ids have none. Where either side has none,
    the two belong to one run when they agree: the same seed and the same epoch history as
    far as both go. A state without an id then takes the one the folder's records carry (the
    first of checkpoint.pth.tar, model_best.pth.tar, args.json, status.json), or a new one if
    none does: a run from before ids gets one when it continues."""
    mine, adopted = state.get(RUN_ID), None
    for name, record in run_records(run):
        theirs = record.get(RUN_ID)
        same = mine == theirs if mine and theirs else _same_lineage(state, record)
        if not same:
            raise UserError(
                f'{run.resume!r} belongs to {describe_run(state)}, but '
                f'{os.path.join(run.folder, name)} to {describe_run(record)}: a folder '
                'continues only its own run. '
                f'Start a new run from the weights of {run.resume!r} with --init-from '
                f'{run.resume} -c NEW_FOLDER')
        adopted = adopted or theirs
    return mine or adopted or new_run_id()


def files_to_rewind(run, state, rewind):
    """The files --rewind moves aside before continuing run.resume in place ([] if nothing
    newer is there), or a UserError when the folder holds a newer state and --rewind is off."""
    newer = newer_states(run, state)
    if not newer:
        return []
    name, other = newer[0]
    held = describe_position(other) if other is not None else 'an unreadable state'
    if not rewind:
        raise UserError(f'{run.resume!r} is at {describe_position(state)}, but '
                        f'{os.path.join(run.folder, name)} holds {held}: continuing from it '
                        'would replace the newer state. Pass --rewind to step the run back '
                        '(the newer files are moved into a previous-* subfolder), or start a '
                        f'new run from it with --init-from {run.resume} -c NEW_FOLDER')
    return [n for n, _ in newer] + [n for n in HISTORY_FILES
                                    if os.path.exists(os.path.join(run.folder, n))]


def move_aside(folder, names):
    """Move FOLDER's files NAMES into a new FOLDER/previous-YYYYmmdd-HHMMSS/; returns it."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    target, n = os.path.join(folder, PREVIOUS + stamp), 1
    while os.path.exists(target):
        target, n = os.path.join(folder, f'{PREVIOUS}{stamp}-{n}'), n + 1
    try:
        os.makedirs(target)
        for name in names:
            os.replace(os.path.join(folder, name), os.path.join(target, name))
    except OSError as e:
        raise UserError(f'could not move the earlier files of {folder!r} into {target!r}: '
                        f'{e.strerror or e}') from None
    return target


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def make_room(folder, overwrite):
    """For a new run, under the folder's lock, before its first write: move an earlier run's
    files aside (--overwrite) or remove those of a start that never trained. Returns the line
    to print, or None."""
    present, trained = existing_run(folder)
    if not present:
        return None
    if trained and not overwrite:
        raise UserError(_holds_a_run(folder, present))
    if trained:
        target = move_aside(folder, present)
        return (f'--overwrite: moved the previous run\'s files ({", ".join(present)}) to '
                f'{target}; delete it when you no longer need it')
    try:
        for name in present:
            _remove(os.path.join(folder, name))
    except OSError as e:
        raise UserError(f'could not remove {os.path.join(folder, name)}: {e.strerror or e}') from None
    return f'replaced the files of a start that never trained in {folder!r} ({", ".join(present)})'


def remove_temporaries(folder):
    """Temporary files that writers killed mid-write (SIGKILL, power loss) left behind. Only
    the holder of the folder's lock writes there, so under the lock none is in use."""
    for name in os.listdir(folder):
        if any(is_temporary(name, of) for of in RUN_FILES):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass


def fingerprint(path):
    """What changes when a file is replaced or rewritten."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def check_writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f'.write-test.{os.getpid()}')
        with open(probe, 'wb') as f:
            f.write(b'ok')
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise UserError(f'cannot write to checkpoint folder {folder!r}: {e.strerror or e}') from None

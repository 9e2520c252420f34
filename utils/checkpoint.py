"""Checkpoints that survive crashes and refuse to load into the wrong run.

Files are written to a temporary name of their writer's own, flushed to disk and renamed over
the old one, so a crash at any moment leaves either the previous complete file or the new
complete file; a failed write removes its temporary file and keeps the previous one.
Loading uses torch.load(weights_only=True): only tensors and plain containers, no code.
"""
import os
import random
import secrets

import numpy as np
import torch

from .errors import UserError

FORMAT_VERSION = 1
# What every checkpoint records of its run; methods add their variant flags.
IDENTITY = ('method', 'arch', 'depth', 'dataset', 'num_branches')
# What any loader needs (evaluation, export) and what continuing a run needs besides.
REQUIRED = IDENTITY + ('state_dict', 'epoch')
TRAINING = ('optimizer', 'step', 'best_acc', 'history', 'meters', 'rng', 'seed', 'args')
TMP_SUFFIX = '.tmp'


def temporary_name(path):
    """PATH.<pid>-<random>.tmp: unique to one writer, so two writers (two processes, or two
    hosts sharing a filesystem) never write into the same temporary file."""
    return f'{path}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}'


def is_temporary(name, of):
    """Whether file NAME is a temporary file of a writer of file OF (both base names)."""
    return name.startswith(of + '.') and name.endswith(TMP_SUFFIX)


def _fsync_folder(folder):
    """Make a rename durable. Only durability is at stake: some network filesystems refuse
    to fsync a folder, and the file is complete either way, so errors are ignored."""
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _reason(error):
    """The OSError behind a failure, if any (torch's zip writer turns ENOSPC from the file's
    write() into 'RuntimeError: unexpected pos ...', keeping the OSError as its context)."""
    seen = error
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if seen is not None:
        return seen.strerror or str(seen)
    return ' '.join(str(error).split())[:200] or type(error).__name__


def write_atomic(path, write):
    """Write PATH through a temporary file of its own, flushed to disk and renamed over PATH.
    On any failure the temporary file is removed and PATH keeps its previous content; a
    failure to write (full disk, quota, I/O error, torch's zip writer) is a UserError."""
    tmp = temporary_name(path)
    try:
        with open(tmp, 'xb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, (OSError, RuntimeError)):
            raise UserError(f'could not write {path}: {_reason(e)}; the previous file there is '
                            'untouched') from None
        raise
    _fsync_folder(os.path.dirname(path))


def save_atomic(state, path):
    write_atomic(path, lambda f: torch.save(state, f))


def write_text_atomic(path, text):
    write_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path, required=REQUIRED):
    """Load a checkpoint of this project onto the CPU, or raise a UserError saying why not.
    `required`: the keys the caller reads (a dict missing one is refused, naming them)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(f'checkpoint {path!r} is a directory, not a checkpoint file; pass '
                        f'{os.path.join(path, "checkpoint.pth.tar")!r}, or --resume auto -c '
                        f'{path!r}')
    if not os.path.exists(path):
        raise UserError(f'checkpoint {path!r} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except OSError as e:
        raise UserError(f'cannot read checkpoint {path!r}: {e.strerror or e}') from None
    # The weights-only unpickler fails in many ways on a file that is not a checkpoint
    # (UnpicklingError, RuntimeError, KeyError, IndexError, EOFError, BadZipFile, ...).
    except Exception as e:  # noqa: BLE001
        reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
        raise UserError(f'{path!r} is not a readable checkpoint (truncated, corrupt, or not '
                        f'saved by this project): {reason}') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT_VERSION:
        raise UserError(f'{path!r} is not a checkpoint of this project (format {FORMAT_VERSION})')
    check_keys(state, path, required)
    return state


def check_keys(state, path, keys):
    missing = [key for key in keys if key not in state]
    if missing:
        raise UserError(f'{path!r} is damaged or incomplete: it lacks {", ".join(missing)}')


def describe(identity):
    """e.g. 'one one_resnet-32 on cifar100 with 3 branch(es), gate=average'."""
    text = '{method} {arch}-{depth} on {dataset} with {num_branches} branch(es)'.format(
        **{key: identity.get(key) for key in IDENTITY})
    extra = ', '.join(f'{k}={v}' for k, v in identity.items() if k not in IDENTITY)
    return f'{text}, {extra}' if extra else text


def check_identity(state, path, expected):
    """Refuse a checkpoint made by another method or variant, or for another arch, depth,
    dataset or branch count."""
    found = {key: state.get(key) for key in expected}
    wrong = [key for key in expected if found[key] != expected[key]]
    if wrong:
        raise UserError(f'{path!r} holds {describe(found)}, but this run is {describe(expected)} '
                        f'(mismatch: {", ".join(wrong)})')


def rng_states():
    """Every random generator's state, in types torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    states = {'python': random.getstate(),
              'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
                        *np_state[2:]),
              'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    random.setstate(tuple(_as_tuple(x) for x in states['python']))
    name, key, *rest = states['numpy']
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _as_tuple(x):
    return tuple(x) if isinstance(x, list) else x

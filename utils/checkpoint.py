"""Checkpoints that survive crashes and refuse to load into the wrong run.

Files are written to a temporary name, flushed to disk and renamed over the old one, so a
crash at any moment leaves either the previous complete file or the new complete file.
Loading uses torch.load(weights_only=True): only tensors and plain containers, no code.
"""
import os
import pickle
import random
import zipfile

import numpy as np
import torch

from .errors import UserError

FORMAT_VERSION = 1
# What must agree between a checkpoint and the run that loads it.
IDENTITY = ('arch', 'depth', 'dataset', 'num_branches')


def _fsync_folder(folder):
    fd = os.open(folder or '.', os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path, write):
    tmp = f'{path}.tmp'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f'could not write {path}: {e.strerror or e}; '
                        'the previous file there is untouched') from None
    _fsync_folder(os.path.dirname(path))


def save_atomic(state, path):
    _write_atomic(path, lambda f: torch.save(state, f))


def write_text_atomic(path, text):
    _write_atomic(path, lambda f: f.write(text.encode()))


def load_checkpoint(path):
    """Load a checkpoint of this project onto the CPU, or raise a UserError saying why not."""
    if not os.path.isfile(path):
        raise UserError(f'checkpoint {path!r} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        reason = ' '.join(str(e).split())[:200]
        raise UserError(f'{path!r} is not a readable checkpoint (truncated, corrupt, or not '
                        f'saved by this project): {reason}') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT_VERSION:
        raise UserError(f'{path!r} is not a checkpoint of this project (format {FORMAT_VERSION})')
    return state


def describe(identity):
    return ('{arch}-{depth} on {dataset} with {num_branches} branch(es)').format(**identity)


def check_identity(state, path, **expected):
    """Refuse a checkpoint made for another arch, depth, dataset or branch count."""
    found = {key: state.get(key) for key in IDENTITY}
    wrong = [key for key in IDENTITY if found[key] != expected[key]]
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

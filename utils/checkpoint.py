"""Checkpoints that survive crashes and refuse to load into the wrong run.

Files are written through utils/atomic.py, so a crash at any moment leaves either the
previous complete file or the new complete file.
Loading uses torch.load(weights_only=True): only tensors and plain containers, no code.
"""
import os
import random
import warnings

import numpy as np
import torch

from .atomic import write_atomic
from .errors import UserError

FORMAT_VERSION = 1
# What every checkpoint records of its run; methods add their member count and variant flags.
IDENTITY = ('method', 'arch', 'depth', 'dataset')
# What any loader needs (evaluation, export) and what continuing a run needs besides.
REQUIRED = IDENTITY + ('state_dict', 'epoch')
TRAINING = ('optimizer', 'step', 'best_acc', 'history', 'meters', 'rng', 'seed', 'args')


def checkpoint_writer(state):
    return lambda f: torch.save(state, f)


def save_atomic(state, path):
    write_atomic(path, checkpoint_writer(state))


def load_checkpoint(path, required=REQUIRED):
    """Load a checkpoint of this project onto the CPU, or raise a UserError saying why not.
    `required`: the keys the caller reads (a dict missing one is refused, naming them)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise UserError(folder_given('checkpoint', path))
    if not os.path.exists(path):
        raise UserError(f'checkpoint {path!r} does not exist')
    try:
        with warnings.catch_warnings():  # e.g. about a plain pickle's protocol: the line says it
            warnings.simplefilter('ignore')
            state = torch.load(path, map_location='cpu', weights_only=True)
    except OSError as e:
        raise UserError(f'cannot read checkpoint {path!r}: {e.strerror or e}') from None
    # The weights-only unpickler fails in many ways on a file that is not a checkpoint
    # (UnpicklingError, RuntimeError, KeyError, IndexError, EOFError, BadZipFile, ...).
    except Exception as e:  # noqa: BLE001
        raise UserError(f'{path!r} is not a readable checkpoint (truncated, corrupt, or not '
                        f'saved by this project): {unreadable_reason(e)}') from None
    if not isinstance(state, dict) or state.get('format') != FORMAT_VERSION:
        raise UserError(f'{path!r} is not a checkpoint of this project (format {FORMAT_VERSION})')
    check_keys(state, path, required)
    return state


def folder_given(flag, path, other_way=''):
    """The line for a folder given to FLAG where a checkpoint file is expected: the file of
    it to pass instead, if it holds one, and OTHER_WAY (e.g. --resume auto -c FOLDER, which
    only training takes)."""
    found = next((os.path.join(path, name) for name in ('checkpoint.pth.tar',
                                                          'model_best.pth.tar')
                  if os.path.isfile(os.path.join(path, name))), None)
    ways = ([f'pass {found}'] if found else []) + ([f'use {other_way}'] if other_way else [])
    return (f'{flag} {path!r} is a directory, not a checkpoint file'
            + ('' if found else ' (it holds no checkpoint.pth.tar or model_best.pth.tar)')
            + (f': {", or ".join(ways)}' if ways else ''))


def unreadable_reason(error):
    """torch.load's failure in a few words; for the weights-only unpickler its own reason, not
    its advice to load with weights_only=False (which would run code the file holds)."""
    text = ' '.join(str(error).split())
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1].split(' Check the documentation')[0]
    return f'{type(error).__name__}: {text.strip()}'.rstrip(': ')[:200]


def check_keys(state, path, keys):
    missing = [key for key in keys if key not in state]
    if missing:
        raise UserError(f'{path!r} is damaged or incomplete: it lacks {", ".join(missing)}')


def describe(identity):
    """e.g. 'one one_resnet-32 on cifar100, num_branches=3, gate=average'."""
    text = '{method} {arch}-{depth} on {dataset}'.format(
        **{key: identity.get(key) for key in IDENTITY})
    extra = ', '.join(f'{k}={v}' for k, v in identity.items() if k not in IDENTITY)
    return f'{text}, {extra}' if extra else text


def check_identity(state, path, expected, assumed=None):
    """Refuse a checkpoint made by another method or variant, or for another arch, depth,
    dataset or member count. `assumed`: the value of a key for checkpoints written before it
    was recorded."""
    found = {key: state.get(key, (assumed or {}).get(key)) for key in expected}
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

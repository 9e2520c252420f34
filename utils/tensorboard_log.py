"""TensorBoard event files of a run, rewritten from its whole history.

Writing the events anew from the history (the rows of summary.csv) after every epoch, rather
than appending, keeps a resumed run's events identical to an uninterrupted run's: no
duplicate or stale steps after a resume from an older checkpoint.

Tags: summary.csv's columns with step = epoch (1-based); `train_*` and `test_*` columns
become `train/*` and `test/*` (e.g. test_acc_ens -> test/acc_ens, train_loss -> train/loss),
the others keep their name (lr, rampup, seconds). The wall time of each point is the
cumulative `seconds` of the epochs so far (TensorBoard's "relative" axis is training time),
since every point is written at once.
"""
import os
import shutil
import tempfile

from .records import TENSORBOARD as FOLDER
STAGING, OLD = '.tensorboard-new-', '.tensorboard-old-'


def scalar_tag(column):
    for split in ('train', 'test'):
        if column.startswith(split + '_'):
            return f'{split}/{column[len(split) + 1:]}'
    return column


def numeric_items(row):
    for column, value in row.items():
        if column != 'epoch' and isinstance(value, (int, float)) and not isinstance(value, bool):
            yield column, float(value)


def remove_leftovers(folder):
    """Staging or old folders that a crash between writes may have left behind."""
    for name in os.listdir(folder):
        if name.startswith((STAGING, OLD)):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def write_events(log_dir, history):
    # Imported here so that runs without --tensorboard never load TensorBoard.
    from torch.utils.tensorboard import SummaryWriter
    writer = SummaryWriter(log_dir=log_dir)
    walltime = 0.0
    try:
        for row in history:
            step = int(row['epoch'])
            walltime += float(row.get('seconds') or 0.0)
            for column, value in numeric_items(row):
                writer.add_scalar(scalar_tag(column), value, global_step=step, walltime=walltime)
    finally:
        writer.close()


def swap_in(staging, target):
    """Replace target by staging. Two renames: a crash between them leaves no target folder
    (never a half-written one), and the next call writes it again from the history."""
    old = None
    if os.path.exists(target):
        old = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=OLD)
        os.rename(target, os.path.join(old, FOLDER))
    os.rename(staging, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def write_tensorboard(folder, history):
    """(Re)write folder/tensorboard/ from the run's full history (summary.csv's rows)."""
    remove_leftovers(folder)
    staging = tempfile.mkdtemp(dir=folder, prefix=STAGING)
    try:
        write_events(staging, history)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, os.path.join(folder, FOLDER))

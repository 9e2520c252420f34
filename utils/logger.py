"""Run-folder outputs, rewritten from the run's history after every epoch.

Because every file is regenerated from the history stored in the checkpoint, the logs of a
resumed run are exactly those of an uninterrupted one, even after a crash between writes.
"""
import csv
import io
import os

from matplotlib.figure import Figure

from .atomic import write_json_atomic
from .records import ARGS, LOG, PLOT, SUMMARY
from .steps import member_columns


def log_txt(history, names, top5=False):
    """The original's log.txt: tab-separated TAcc_i VAcc_i per branch, then TAcc_e VAcc_e;
    with `top5` (ImageNet), then T5Acc_i V5Acc_i likewise."""
    kinds = [('acc', 'Acc')] + ([('acc5', '5Acc')] if top5 else [])
    header = [f'{split}{label}_{"e" if n == "ens" else n}'
              for _, label in kinds for n in names for split in 'TV']
    rows = ['\t'.join(header)]
    for row in history:
        rows.append('\t'.join(f'{row[f"{split}_{key}_{n}"]:.6f}' for key, _ in kinds
                              for n in names for split in ('train', 'test')))
    return '\n'.join(rows) + '\n'


def summary_csv(history):
    """One row per epoch with every metric, for programs (pandas.read_csv)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator='\n')
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def write_args(folder, args):
    write_json_atomic(os.path.join(folder, ARGS), vars(args))


def curves_png(history, names, title):
    epochs = [row['epoch'] for row in history]
    fig = Figure(figsize=(11, 4))   # not pyplot's: no global state to close
    ax_acc, ax_loss = fig.subplots(1, 2)
    for n in names:
        label = 'ensemble' if n == 'ens' else f'member {n}' if n.isdigit() else n
        ax_acc.plot(epochs, [row[f'test_acc_{n}'] for row in history], label=f'test {label}')
    ax_acc.plot(epochs, [row['train_acc_1'] for row in history], '--', label=f'train member {names[0]}')
    ax_acc.set(xlabel='epoch', ylabel='top-1 accuracy (%)', title=title)
    ax_acc.legend(fontsize=8)
    ax_loss.plot(epochs, [row['train_loss'] for row in history], label='train')
    ax_loss.plot(epochs, [row['test_loss'] for row in history], label='test')
    ax_loss.set(xlabel='epoch', ylabel='objective', title='loss')
    ax_loss.legend(fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.92, wspace=0.2)  # fixed:
    image = io.BytesIO()                       # tight_layout measured every text, at each epoch
    fig.savefig(image, format='png', dpi=90)
    return image.getvalue()


def run_files(folder, history, names, title, plot=True, top5=False):
    """[(path, write)] of the files rewritten from the history after every epoch: log.txt,
    summary.csv and (with `plot`) curves.png, for utils.atomic.write_all_atomic."""
    contents = {LOG: log_txt(history, names, top5).encode(), SUMMARY: summary_csv(history).encode()}
    if plot:
        contents[PLOT] = curves_png(history, names, title)
    return [(os.path.join(folder, name), lambda f, data=data: f.write(data))
            for name, data in contents.items()]


def epoch_line(row, names, epochs, top5=False):
    """The line printed after each epoch: LR, ramp-up, losses, top-1 of every column (and
    with `top5`, the test top-5 of every column)."""
    def accs(split):
        parts = ' '.join(f'{row[f"{split}_acc_{n}"]:.2f}' for n in names if n != 'ens')
        if len(member_columns(names)) > 1:
            parts += f' mean {row[f"{split}_acc_mean"]:.2f}'
        if 'ens' in names:
            parts += f' ens {row[f"{split}_acc_ens"]:.2f}'
        return parts
    fives = (' | top-5 test ' + ' '.join(f'{row[f"test_acc5_{n}"]:.2f}' for n in names)
             if top5 else '')
    return (f'Epoch {row["epoch"]}/{epochs} lr {row["lr"]:.4g} w {row["rampup"]:.4f} | loss '
            f'train {row["train_loss"]:.4f} test {row["test_loss"]:.4f} | top-1 train '
            f'{accs("train")} | test {accs("test")}{fives} | {row["seconds"]:.1f}s')


def result_line(history, names, label):
    """The closing line: the deployed network's last and (selected on the test set) best."""
    key = f'test_acc_{names[0]}'
    best = max(history, key=lambda row: row[key])
    last = history[-1]
    ensemble = f'; ensemble last {last["test_acc_ens"]:.2f}%' if 'ens' in names else ''
    return (f'Done. {label} test top-1: last {last[key]:.2f}%, best {best[key]:.2f}% (epoch '
            f'{best["epoch"]}, selected on the test set){ensemble}')

"""report.py's plots: mean error curves over seeds and bars, with ± sample std."""
import io
import math

from methods.networks import network_name
from .tables import BEST_LABEL


def plot_label(result):
    _, arch, depth, _, _ = result.key
    return f'{network_name(arch, depth)} {result.label}'


def by_dataset(results):
    datasets = {}
    for result in results:
        datasets.setdefault(result.key[3], []).append(result)
    return datasets


def figure_bytes(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=90)
    return buffer.getvalue()


LINE_STYLES = {'1': '-', 'leader': ':', 'ens': '--'}


def error_curves_png(results):
    """Mean test error per epoch over seeds, with a band of ± sample std (n > 1); one colour
    per group, solid for the single network, dashed for the ensemble."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    datasets = by_dataset(results)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.5), squeeze=False)
    for ax, (dataset, members) in zip(axes[0], datasets.items()):
        colours, tops = {}, []
        for result in members:
            colour = colours.setdefault(result.key, f'C{len(colours) % 10}')
            curves = np.array([run.errors(result.member) for run in result.runs])
            epochs = [int(row['epoch']) for row in result.runs[0].rows]
            mean = curves.mean(axis=0)
            ax.plot(epochs, mean, LINE_STYLES[result.member], color=colour,
                    label=f'{plot_label(result)} (n={result.n})')
            if result.n > 1:
                std = curves.std(axis=0, ddof=1)
                ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2)
            tops.append(mean[len(mean) // 10:].max())   # leave out the first tenth's high errors
        ax.set_ylim(top=min(100.0, max(tops) + 1.0))
        ax.set(xlabel='epoch', ylabel='test top-1 error (%)',
               title=f'{dataset}: mean over seeds, band ± sample std')
        ax.legend(fontsize=7)
    fig.tight_layout()
    data = figure_bytes(fig)
    plt.close(fig)
    return data


def error_bars_png(results, best):
    """Mean error per row with ± sample std error bars (none for n = 1); published values as
    black crosses."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = by_dataset(results)
    fig, axes = plt.subplots(1, len(datasets), squeeze=False,
                             figsize=(max(5.0, 1.2 * len(results) + 2), 5))
    for ax, (dataset, members) in zip(axes[0], datasets.items()):
        x = range(len(members))
        bars = ax.bar(x, [r.mean for r in members], capsize=4,
                      yerr=[math.nan if r.std is None else r.std for r in members])
        ax.bar_label(bars, [f'n={r.n}' for r in members], label_type='center', fontsize=7,
                     color='white')
        published = [(i, r.published[0].error) for i, r in enumerate(members) if r.published]
        if published:
            ax.plot(*zip(*published), 'kx', markersize=9, label='published')
            ax.legend(fontsize=8)
        ax.set_xticks(list(x), [plot_label(r) for r in members], rotation=30, ha='right',
                      fontsize=7)
        ax.set(ylabel='test top-1 error (%)',
               title=f'{dataset}, {BEST_LABEL if best else "last epoch"} (± std)')
    fig.tight_layout()
    data = figure_bytes(fig)
    plt.close(fig)
    return data

"""ONE versus the baseline on real Fashion-MNIST, over several seeds, in minutes on 2 CPU cores.

Trains a plain ResNet and a ONE ResNet for each seed (same data, schedule and seed for both)
through the two entry scripts, two runs at a time (one thread each on 2 cores), then prints the
last-epoch test top-1 of the baseline, ONE (branch 1) and ONE-E (gated ensemble) as mean ±
sample std over the seeds, and plots the test curves. Re-running continues or reuses the runs.
The default settings were chosen by a seed study: docs/DEMO.md.
"""
import os
import signal
import statistics
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from utils.checkpoint import load_checkpoint  # noqa: E402
from utils.cli import Parser  # noqa: E402
from utils.data import load_dataset  # noqa: E402
from utils.errors import UserError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = (('baseline', 'baseline', '1'), ('ONE (branch 1)', 'one', '1'),
          ('ONE-E (ensemble)', 'one', 'ens'))  # (printed name, run, history column)


def parse(argv):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument('--data-dir', default='./data')
    p.add_argument('--out', default='checkpoints/fashionmnist/demo')
    p.add_argument('--depth', type=int, default=8)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--train-subset', type=int, default=15000)
    p.add_argument('--rampup', type=float, default=4,
                   help="ONE's --consistency_rampup, in epochs (docs/DEMO.md: why not 80/300 of "
                        'the epochs)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='--manualSeed values')
    p.add_argument('--jobs', type=int, default=2, help='runs at a time, each with CPUs / jobs threads')
    args = p.parse_args(argv)
    args.seeds = list(dict.fromkeys(args.seeds))
    if len(args.seeds) < 2:
        p.error('--seeds needs at least two different seeds (the table shows a sample std)')
    if args.jobs < 1:
        p.error(f'--jobs must be at least 1, got {args.jobs}')
    return args


def run_commands(args):
    """{(method, seed): (run folder, command)}: a ONE and a baseline run per seed."""
    common = ['-d', 'fashionmnist', '--data-dir', args.data_dir, '--depth', str(args.depth),
              '--epochs', str(args.epochs), '--train-subset', str(args.train_subset),
              '--resume', 'auto',
              # the paper's LR / 10 at 50% and 75% of training
              '--schedule', str(args.epochs // 2), str(args.epochs * 3 // 4)]
    extra = {'baseline': [], 'one': ['--consistency_rampup', str(args.rampup)]}
    runs = {}
    for method, script in (('one', 'cifar_one.py'), ('baseline', 'cifar_baseline.py')):
        for seed in args.seeds:  # the longer ONE runs first: the two lanes end closer together
            folder = os.path.join(args.out, f'{method}-{args.depth}-seed{seed}')
            runs[method, seed] = folder, [sys.executable, os.path.join(HERE, script), *common,
                                          '--manualSeed', str(seed), '-c', folder, *extra[method]]
    return runs


def train(runs, jobs):
    """Run the commands, `jobs` at a time, each writing its output to RUN/demo.log.
    Returns (key, exit status, last line written) of each run that failed. On Ctrl-C
    no further run starts and the running ones get SIGINT, on which they save and stop."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cpus // jobs)))
    running, stopping = {}, threading.Event()

    def one(key):
        folder, command = runs[key]
        if stopping.is_set():
            return key, None, ''
        os.makedirs(folder, exist_ok=True)
        log = os.path.join(folder, 'demo.log')
        with open(log, 'w') as out:
            running[key] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            code = running[key].wait()
        with open(log) as f:
            last = ([line.strip() for line in f if line.strip()] or [''])[-1]
        print(f'  {key[0]:<8} seed {key[1]}: {"done" if code == 0 else f"FAILED ({code})"}  {last}',
              flush=True)
        return key, code, last

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        results = list(pool.map(one, runs))
    except KeyboardInterrupt:
        stopping.set()
        for process in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [(key, code, last) for key, code, last in results if code != 0]


def mean_std(values):
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def print_table(histories, args, num_test):
    n = len(args.seeds)
    print(f'\nFashion-MNIST test set ({num_test:,} images), resnet-{args.depth}, {args.epochs} '
          f'epochs on {args.train_subset} training images, ONE ramp-up {args.rampup:g} epochs; '
          f'last-epoch test top-1 (%), mean ± sample std over n = {n} seeds '
          f'({" ".join(map(str, args.seeds))}):')
    print(f'  {"model":<18} {"mean ± std":>13}   per seed')
    last = {}
    for name, method, column in MODELS:
        last[name] = [histories[method, seed][-1][f'test_acc_{column}'] for seed in args.seeds]
        mean, std = mean_std(last[name])
        print(f'  {name:<18} {mean:6.2f} ± {std:4.2f}   {" ".join(f"{a:.2f}" for a in last[name])}')
    for name, _, _ in MODELS[1:]:
        diff = [a - b for a, b in zip(last[name], last['baseline'])]
        mean, std = mean_std(diff)
        label = f'{name.split()[0]} - baseline'
        print(f'  {label:<18} {mean:+6.2f} ± {std:4.2f}   (per seed, then mean ± std)')


def plot(histories, args):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, method, column in MODELS:
        curves = [[row[f'test_acc_{column}'] for row in histories[method, seed]]
                  for seed in args.seeds]
        epochs = range(1, len(curves[0]) + 1)
        stats = [mean_std(accs) for accs in zip(*curves)]
        means = [m for m, _ in stats]
        line, = ax.plot(epochs, means, marker='o', label=name)
        ax.fill_between(epochs, [m - s for m, s in stats], [m + s for m, s in stats],
                        color=line.get_color(), alpha=0.2)
    ax.set(xlabel='epoch', ylabel='test top-1 (%)', xticks=list(epochs),
           title=f'Fashion-MNIST, resnet-{args.depth}, {args.train_subset} train images, '
                 f'mean ± std of {len(args.seeds)} seeds')
    ax.title.set_fontsize(9)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(args.out, 'comparison.png')
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse(argv)
    try:
        num_test = len(load_dataset('fashionmnist', args.data_dir).test_labels)  # fetch it once
    except UserError as e:
        print(f'demo_fashion_mnist.py: error: {e}', file=sys.stderr)
        return 2
    runs = run_commands(args)
    print(f'== {len(runs)} runs (baseline resnet-{args.depth} and ONE one_resnet-{args.depth}, '
          f'seeds {" ".join(map(str, args.seeds))}), {args.jobs} at a time; logs in '
          f'{args.out}/*/demo.log', flush=True)
    try:
        failed = train(runs, args.jobs)
    except KeyboardInterrupt:
        print('demo_fashion_mnist.py: interrupted; run it again to continue where the runs '
              'stopped', file=sys.stderr)
        return 130
    if failed:
        key, code, last = failed[0]
        print(f'demo_fashion_mnist.py: error: {len(failed)} run(s) failed, e.g. {runs[key][0]}: '
              f'{last}', file=sys.stderr)
        return code  # 2 when the entry script refused a flag or the data
    histories = {key: load_checkpoint(os.path.join(folder, 'checkpoint.pth.tar'))['history']
                 for key, (folder, _) in runs.items()}
    print_table(histories, args, num_test)
    print(f'plot: {plot(histories, args)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""ONE versus the baseline on real Fashion-MNIST, small enough for a 2-core CPU in minutes.

Trains a plain ResNet and a ONE ResNet with the same seed, data and schedule through the
two entry scripts, then prints their last-epoch test top-1 (baseline, ONE = branch 1,
ONE-E = gated ensemble) and plots the test curves. Re-running continues or reuses the runs.
"""
import argparse
import os
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import cifar_baseline  # noqa: E402
import cifar_one  # noqa: E402
from utils.checkpoint import load_checkpoint  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--data-dir', default='./data')
    p.add_argument('--out', default='checkpoints/fashionmnist/demo')
    p.add_argument('--depth', type=int, default=20)
    p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--train-subset', type=int, default=15000)
    p.add_argument('--manualSeed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    common = ['-d', 'fashionmnist', '--data-dir', args.data_dir, '--depth', str(args.depth),
              '--epochs', str(args.epochs), '--train-subset', str(args.train_subset),
              '--manualSeed', str(args.manualSeed), '--resume', 'auto',
              # the paper's schedule (LR / 10 at 50% and 75% of training) and ramp-up (80 of
              # 300 epochs) scaled to this short run
              '--schedule', str(args.epochs // 2), str(args.epochs * 3 // 4)]
    runs = {'baseline': os.path.join(args.out, f'baseline-{args.depth}'),
            'one': os.path.join(args.out, f'one-{args.depth}')}
    print(f'== baseline resnet-{args.depth}', flush=True)
    if cifar_baseline.main(common + ['-c', runs['baseline']]):
        return 1
    print(f'== ONE one_resnet-{args.depth} (3 branches)', flush=True)
    if cifar_one.main(common + ['-c', runs['one'], '--consistency_rampup',
                                str(max(1, round(args.epochs * 80 / 300)))]):
        return 1

    baseline = load_checkpoint(os.path.join(runs['baseline'], 'checkpoint.pth.tar'))['history']
    one = load_checkpoint(os.path.join(runs['one'], 'checkpoint.pth.tar'))['history']
    rows = [('baseline', baseline[-1]['test_acc_1']), ('ONE (branch 1)', one[-1]['test_acc_1']),
            ('ONE-E (ensemble)', one[-1]['test_acc_ens'])]
    print(f'\nFashion-MNIST test set (10,000 images), resnet-{args.depth}, {args.epochs} epochs '
          f'on {args.train_subset} training images, seed {args.manualSeed}; last epoch:')
    print(f'  {"model":<18} top-1 (%)')
    for name, acc in rows:
        print(f'  {name:<18} {acc:6.2f}')

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, history, key in (('baseline', baseline, 'test_acc_1'),
                                ('ONE (branch 1)', one, 'test_acc_1'),
                                ('ONE-E', one, 'test_acc_ens')):
        ax.plot([r['epoch'] for r in history], [r[key] for r in history], marker='o', label=label)
    ax.set(xlabel='epoch', ylabel='test top-1 (%)',
           title=f'Fashion-MNIST, resnet-{args.depth}, {args.train_subset} train images')
    ax.legend()
    fig.tight_layout()
    plot = os.path.join(args.out, 'comparison.png')
    fig.savefig(plot, dpi=90)
    print(f'plot: {plot}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

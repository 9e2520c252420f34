"""Train ONE (On-the-fly Native Ensemble) on CIFAR: m branches distilled from their gated ensemble.

    python cifar_one.py -a one_resnet --dataset cifar100 --depth 32 --epochs 300 \
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/ONE-32
Ablations of the paper: --no-distill, --gate average, --branch-point stage1, --num-branches M.
"""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['one'], __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    sys.exit(main())

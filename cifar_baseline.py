"""Train the baseline: a plain CIFAR ResNet with cross-entropy.

    python cifar_baseline.py -a resnet --dataset cifar100 --depth 32 --epochs 300 \
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/baseline-32
"""
import sys

from utils import engine
from utils.cli import build_parser
from utils.losses import CrossEntropy


def objective(args):
    return CrossEntropy()


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0], arch='resnet')
    return engine.main(parser, objective, argv)


if __name__ == '__main__':
    sys.exit(main())

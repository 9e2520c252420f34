"""Train ONE (On-the-fly Native Ensemble) on CIFAR: m branches distilled from their gated ensemble.

    python cifar_one.py -a one_resnet --dataset cifar100 --depth 32 --epochs 300 \
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/ONE-32
"""
import sys

from utils import engine
from utils.cli import build_parser
from utils.losses import ONELoss


def objective(args):
    return ONELoss(temperature=args.temperature, rampup_epochs=args.consistency_rampup)


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0], arch='one_resnet', one=True)
    return engine.main(parser, objective, argv)


if __name__ == '__main__':
    sys.exit(main())

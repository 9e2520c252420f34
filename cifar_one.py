"""Train ONE (On-the-fly Native Ensemble) on CIFAR: m branches distilled from their gated ensemble.

    python cifar_one.py -a one_resnet --dataset cifar100 --depth 32 --epochs 300 \
        --schedule 151 225 --gamma 0.1 --wd 1e-4 --checkpoint checkpoints/cifar100/ONE-32
"""
import sys

from utils.cli import build_parser
from utils.engine import main
from utils.losses import ONELoss


def objective(args):
    return ONELoss(temperature=args.temperature, rampup_epochs=args.consistency_rampup)


if __name__ == '__main__':
    parser = build_parser(__doc__.splitlines()[0], arch='one_resnet', one=True)
    sys.exit(main(parser, objective))

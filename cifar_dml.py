"""Train m CIFAR ResNets by deep mutual learning (DML): each also mimics the others' predictions.

    python cifar_dml.py -a resnet --dataset cifar100 --depth 32 --num-nets 2 \
        --checkpoint checkpoints/cifar100/DML-32
Defaults are the paper's (Nesterov, batch 64, 200 epochs, LR / 10 every 60 epochs, networks
updated in turn); --update simultaneous takes one step over all networks' losses.
"""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['dml'], __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    sys.exit(main())

"""Train OKDDip (Chen et al., AAAI 2020): attention-weighted peers teach each other and a leader.

    python cifar_okddip.py --dataset cifar100 --depth 32 --checkpoint checkpoints/cifar100/OKDDip-32
The authors' settings are the defaults: 4 branches (leader = branch 1), T = 3, alpha = 1,
ramp-up 80 epochs, weight decay 5e-4, Nesterov momentum, LR / 10 at epochs 150 and 225.
The authors' code's logit aggregation, which produced the published 25.65: --aggregate logits.
"""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['okddip'], __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    sys.exit(main())

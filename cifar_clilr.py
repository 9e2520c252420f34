"""Train CL-ILR (Song & Chai, NeurIPS 2018): heads on a shared trunk learn from each other.

    python cifar_clilr.py --dataset cifar100 --depth 32 --checkpoint checkpoints/cifar100/CL-ILR-32
Defaults: 4 heads, T = 2, beta = 0.5 (qq456cvb's reimplementation; the paper's own values are
unchecked), backpropagation rescaling, LR / 10 at epochs 150 and 225. Ablation: --no-rescaling.
DefangChen/OKDDip's version: --form okddip --temperature 3 --consistency_rampup 80.
See docs/FIDELITY.md (CL-ILR).
"""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['clilr'], __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    sys.exit(main())

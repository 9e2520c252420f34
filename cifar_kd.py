"""Train a CIFAR ResNet student by knowledge distillation (KD) from a frozen teacher checkpoint.

    python cifar_kd.py -a resnet --dataset cifar100 --depth 32 --teacher \
        checkpoints/cifar100/baseline-110/model_best.pth.tar --checkpoint checkpoints/cifar100/KD-32
A ONE teacher distils its ensemble by default; --teacher-member K takes its branch K.
"""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['kd'], __doc__.splitlines()[0], argv)


if __name__ == '__main__':
    sys.exit(main())

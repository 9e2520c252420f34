"""Train the baseline: methods/baseline.py declares it; `python cifar_baseline.py --help` shows how."""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['baseline'], argv)


if __name__ == '__main__':
    sys.exit(main())

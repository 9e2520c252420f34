"""Train KDCL: methods/kdcl.py declares it; `python cifar_kdcl.py --help` shows how."""
import sys

from utils.startup import interrupt_exits_while_importing

with interrupt_exits_while_importing(__name__ == '__main__'):  # Ctrl-C: one line, no traceback
    from methods import METHODS
    from utils import engine


def main(argv=None):
    return engine.main(METHODS['kdcl'], argv)


if __name__ == '__main__':
    sys.exit(main())

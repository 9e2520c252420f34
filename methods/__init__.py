"""The training methods, one file each; entry scripts and export look them up by name. The
registry's order is the order of report.py's tables (the baseline first, ONE last)."""
from .base import Method
from .baseline import Baseline
from .clilr import CLILR
from .dml import DML
from .kd import KD
from .kdcl import KDCL
from .okddip import OKDDip
from .one import ONE

METHODS = {m.name: m for m in (
    Baseline(),
    KD(),
    DML(),
    KDCL(),
    CLILR(),
    OKDDip(),
    ONE(),
)}

# Run folders written before runs recorded their method: the method their arch meant.
METHOD_OF_OLD_RUNS = {'one_resnet': 'one', 'resnet': 'baseline'}

__all__ = ['METHODS', 'METHOD_OF_OLD_RUNS', 'Method']

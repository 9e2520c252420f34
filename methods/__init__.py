"""The training methods, one file each; entry scripts and export look them up by name."""
from .base import Method
from .baseline import Baseline
from .clilr import CLILR
from .dml import DML
from .kd import KD
from .okddip import OKDDip
from .one import ONE

METHODS = {m.name: m for m in (
    Baseline(),
    ONE(),
    CLILR(),
    OKDDip(),
    KD(),
    DML(),
)}

__all__ = ['METHODS', 'Method']

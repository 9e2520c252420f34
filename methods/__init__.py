"""The training methods, one file each; entry scripts and export look them up by name."""
from .base import Method
from .baseline import Baseline
from .one import ONE

METHODS = {m.name: m for m in (
    Baseline(),
    ONE(),
)}

__all__ = ['METHODS', 'Method']

"""Launch a grid of training runs through submitit, on SLURM or on this machine; resume it;
report it. `python sweep.py --help` (the sweeps package's docstring) says how."""
import sys

from sweeps.cli import main

if __name__ == '__main__':
    sys.exit(main())

"""Reproduce a published table: train its runs through sweep.py's machinery, resumably, and
write results/TABLE/ with each row's verdict. `python reproduce.py --help` (the reproductions
package's docstring) says how; `python reproduce.py --list` names the tables."""
import sys

from reproductions.cli import main

if __name__ == '__main__':
    sys.exit(main())

"""Summarise finished runs: top-1 error over seeds, beside the published numbers.

    python report.py checkpoints/ [MORE_RUNS_OR_PARENTS...] [--best] [--out report/]
                     [--plots/--no-plots] [--allow-mixed-schedules]

Finds run folders (those holding args.json, searched recursively), skips unfinished,
diverged and unreadable runs, saying why (any file it cannot make sense of, such as a wrongly
typed args.json value, a NaN accuracy or a repeated epoch row, skips its run; a copy of a
run, by its run id, counts once), groups the rest by method, variant flags, arch, depth and
dataset, and prints a Markdown table of top-1 error (100 - accuracy) as mean and
sample std (ddof=1) over seeds, at the last epoch (or with --best at each network's best
epoch, which is selected on the test set). Beside each row: the published value from
methods/published.py, its source, and ours - published. Writes table_{last,best}.md/.csv,
curves.png and bars_{last,best}.png into --out. Refuses (exit 2, nothing written) to average
runs of different schedules or training data, and to put different schedules side by side
unless --allow-mixed-schedules. A run's schedule includes the epochs it trained (a run
started with --start-epoch 1 is not a full run).
"""
import sys

from reports.cli import main

if __name__ == '__main__':
    sys.exit(main())

r"""The published tables as commands: train a table's runs through sweep.py's machinery, then
write its results folder, with each row's verdict.

    python reproduce.py --list
    python reproduce.py TABLE [--rows ROW ...] [--seeds 0 1] [--data-dir DIR] [--unofficial-data]
                        [sweep.py's options] [-- TRAINING FLAGS ...]
    python reproduce.py TABLE --collect      # write the results of what has finished
    python reproduce.py TABLE --show         # print them again from the results folder

--list names every table, what each row trains (scripts, epochs, runs per seed) and the
published numbers it is compared with (methods/published.py, with their sources). A table's
rows are networks; --rows runs some of them.

Each row is one sweep per part (its scripts; an ablation's flags), over --seeds, with each
method's own published settings: the runs of RUNS/TABLE/ROW/SCRIPT/.../manualSeed=S (--runs,
default checkpoints/reproduce), every one `SCRIPT ... -c FOLDER --resume auto`. The same
command skips the finished runs and continues the others. sweep.py's options pass through
(--executor local|slurm, --partition, --time, --max-parallel, --gpus, --cpus-per-run, ...;
--dry-run and --status report each sweep and train nothing); so do training flags after
`--` (e.g. -- --fast), given to every run after the table's own, so they win (a tiny test:
-- --epochs 1 --train-subset 64). --data-dir and --unofficial-data reach every run
(--unofficial-data: a rebuilt copy of CIFAR, recorded in each run's args.json).

Then every finished run is collected into RESULTS/TABLE/ (--results, default results), small
text files only:

    README.md         the verdict per row, each column beside its published number with the
                      difference and the gains over the baseline, report.py's table
    comparison.csv    the same comparisons, one line each; report.csv: report.py's CSV
    runs.json         every run the table's sweeps hold, with its state
    runs/ROW/SCRIPT/.../manualSeed=S/
                      args.json, log.txt, summary.csv and provenance.json (the final
                      checkpoint's sha256, the device, torch and the data copy)

A row is reproduced when each column's mean over at least 2 seeds is within 1.0 point of its
published number and ONE's gain over the baseline (each method's, for the peers) is within
1.0 point of the published gain, with the published settings; otherwise not reproduced,
incomplete (runs or seeds missing) or not judged (trained otherwise, or nothing published to
compare with). On SLURM the command returns once the jobs are queued: run it again (or with
--collect) when they have finished. Every error is one line and exit status 2.

Examples: CIFAR-100's ResNet-32 row on the local GPU, 2 seeds, on a rebuilt copy of the data;
then the whole table on SLURM:

    python reproduce.py one-cifar100 --rows resnet-32 --seeds 0 1 --data-dir data \
        --unofficial-data -- --fast
    python reproduce.py one-cifar100 --executor slurm --partition gpu --time 1440
"""

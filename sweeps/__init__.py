r"""Launch a grid of training runs through submitit, on SLURM or on this machine; resume it;
report it.

    python sweep.py --root ROOT --scripts SCRIPT [SCRIPT ...] [--vary NAME=V1,V2,... ...]
                    [options] [-- FIXED FLAGS...]

The grid is every combination of the --vary values, in the order given, for every script.
NAME is a flag of the entry scripts without its dashes (depth, dataset, manualSeed,
num-branches, lr...), a one-letter NAME is a short flag (d=cifar10 is -d cifar10); a value
holding spaces becomes several words (--vary "schedule=151 225,100 150"). Flags after `--`
are given to every run unchanged. A flag, varied or fixed, is passed only to the scripts whose
--help lists it (so --vary num-branches=1,2,3 gives ONE three runs and the baseline one); a
flag that no script lists is refused, and so is a varied flag given again (after --, or
varied under another of its names: the run would silently take the last value). The sweep
itself sets -c and --resume auto.

Run folders follow from the script and the varied values alone, so the same grid always
gives the same folders:

    ROOT/SCRIPT_STEM/NAME1=VALUE1/NAME2=VALUE2/...    e.g. ROOT/cifar_one/depth=32/manualSeed=0

and every run is `python SCRIPT FIXED... VARIED... -c FOLDER --resume auto` (the python that
runs sweep.py), so a requeued, preempted or relaunched run continues from its checkpoint.
Fixed flags are not part of the folder name: a grid with other fixed flags (another
schedule, another lr) needs another --root, or it would continue the old runs. Launching
skips runs that are done (status.json says done with at least the run's --epochs, or the last
row of summary.csv reaches them), running (their folder's lock is held), queued (SLURM still
holds their last job: pending, requeued or starting, as squeue says) or diverged (resuming
would repeat the same steps); everything else starts or continues.

Before anything is submitted, every run to start is checked by its own script, run with
--check-only on this machine: its flags and values, its data (downloaded here if missing)
and the checkpoint it would continue. If any run would be refused, each refusal is listed in
one line and nothing is submitted. On SLURM, a run no node of the partition can hold is
refused too (sinfo: a GPU where there is none, more CPUs or memory than any node has), with
the flag to change. Every error is one line and exit status 2.

Executors (--executor, default auto: slurm where `srun` is on the PATH, else local):
  slurm  one job array, one task and at most one GPU per run, --max-parallel array tasks at a
         time, #SBATCH --requeue, and --signal=USR2@SIGNAL_DELAY before the time limit: the
         job then stops the run (SIGTERM: it saves the exact batch), and requeues itself,
         which resumes it (a run that has finished by then is not requeued). A preemption's
         SIGTERM (or `scontrol requeue`, or scancel) reaches the run directly and saves
         likewise; SLURM requeues it if the partition preempts by requeueing, else relaunch
         the sweep. sweep.py returns once the array is submitted.
  local  submitit's LocalExecutor on this machine, --max-parallel runs at a time, sweep.py
         waiting for all of them. Each job slot k owns GPUs (CUDA_VISIBLE_DEVICES is set to
         slot k's GPU for every run it starts; GPUs are taken from --gpus, else
         CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`), and every run gets OMP_NUM_THREADS =
         --cpus-per-run (default: the CPU count over --max-parallel). Ctrl-C or SIGTERM
         stops the running runs at a batch boundary with a checkpoint (a second one stops
         waiting for them); run the same command to go on. submitit's local controller
         starts a job at most 6 times per launch (5 time-limit requeues).
--time limits each job (slurm default 24 h, local none); --signal-delay seconds before it
(default 120, at most half the limit) the job is told to save, and requeues itself.

--pack (on a GPU: many small runs in one process) trains the runs of the grid that differ only
by their seed, the manualSeed axis of --vary, as one pack per job: `python SCRIPT ... --seeds
0 1 2 3 -c ROOT/cifar_one/.../manualSeed={seed} --resume auto`, one stacked model in one
process on one GPU (utils/pack.py). Each run keeps its folder (the same as without --pack),
its entry in sweep.json and its line in --status, and is skipped or continued exactly as
without --pack; --max-parallel, --gpus-per-run and --cpus-per-run count jobs. A pack starts or
continues as a whole, so at each launch the runs to start of one group (the same script and
the same value of every other axis) are packed by where they stand: the runs without a
checkpoint together, the runs whose checkpoints are at the same epoch and batch together; a
run that stands alone runs alone, as without --pack. No run is in two jobs, and every job is
checked with --check-only first (a pack's check checks each of its runs). Refused in one line:
--pack without a manualSeed axis of two or more plain whole numbers, and a script whose runs
a pack cannot hold (its check says why: dropout, DML's alternating updates, fp16, ...). When
one run of a pack diverges, the pack stops: that run is diverged, the others failed ("stopped
with its pack"), and a relaunch packs them again. For example, {baseline, ONE} x 4 seeds of
ResNet-32 as two jobs, one GPU each:

    python sweep.py --root checkpoints/seeds --scripts cifar_baseline.py cifar_one.py \
        --vary manualSeed=0,1,2,3 --pack --partition gpu -- --depth 32 --epochs 300

--dry-run prints one line per run (what it would do, the folder, the command; under --pack a
packed run names its pack, and a line per pack gives its command), checks the runs to start
and the root as a launch would, and submits nothing. --status prints, for each run, its state
and the epochs it completed:
  done, running (lock held: host and pid; or its SLURM job starting), queued (SLURM holds
  its job: id, state and reason), preempted (stopped by a signal, checkpoint saved),
  interrupted (status.json says running but no process holds the lock, or files without a
  status: killed, out of memory or node failure; relaunch continues from the last
  checkpoint), incomplete (finished fewer epochs than the grid asks, e.g. --epochs raised),
  failed (with the last error line), diverged, not started. The epochs are those finished,
  as status.json (rewritten after every epoch) or summary.csv says, whichever is further.
The launch writes ROOT/sweep.json (the runs and their commands), so `--status --root ROOT`
alone works; with --scripts it reports that grid instead. Job logs (the run's output, one
file per job, which a pack's runs share, ending with one line that says how the run ended)
are ROOT/jobs/ARRAYID_TASK_0_log.out on SLURM (a grid of one run is one job: JOBID_0_log.out;
locally PID_0_log.out); ROOT/jobs/outcomes/ records how each job's run exited.

Examples: the paper's comparison (24 runs), then the branch study on one GPU machine:

    python sweep.py --root checkpoints/paper --scripts cifar_baseline.py cifar_one.py \
        --vary dataset=cifar10,cifar100 depth=32,110 manualSeed=0,1,2 --partition gpu \
        -- --epochs 300 --schedule 151 225 --gamma 0.1 --lr 0.1 --wd 1e-4 --train-batch 128
    python sweep.py --root checkpoints/branches --executor local --scripts cifar_one.py \
        --vary num-branches=1,2,3,4,5 manualSeed=0,1,2 -- --dataset cifar100 --depth 32
"""

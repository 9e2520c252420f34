"""sweep.py's SLURM path on stand-ins for its commands (FakeSlurm, tests/sweep_helpers.py):
the job array's sbatch file; runs whose job squeue still lists never submitted twice, and
nothing submitted when squeue cannot answer; resources no node of sinfo's has refused before
sbatch. tests/test_slurm.py runs sweep.py on a real SLURM."""
import getpass
import json

from submitit.core.utils import DelayedSubmission

import sweep
from sweep_helpers import status_lines
from sweeps.job import RunJob


def test_slurm_array_sbatch_file(fake_slurm, tmp_path, capsys):
    """The real submission path, with stand-ins for the SLURM commands."""
    root = tmp_path / 'grid'
    assert sweep.main(['--root', str(root), '--scripts', 'cifar_baseline.py',   # auto: srun found
                       '--vary', 'manualSeed=0,1,2', '--max-parallel', '2', '--partition', 'gpu',
                       '--time', '600', '--', '--epochs', '300']) == 0
    out = capsys.readouterr().out
    assert '3 to run on slurm' in out and 'job 4242_2' in out
    text = fake_slurm.submitted
    for line in ('#SBATCH --array=0-2%2', '#SBATCH --signal=USR2@120', '#SBATCH --requeue',
                 '#SBATCH --partition=gpu', '#SBATCH --time=600', '#SBATCH --gpus-per-node=1',
                 '#SBATCH --cpus-per-task=4', '#SBATCH --ntasks-per-node=1',
                 '#SBATCH --job-name=sweep-grid'):
        assert line in text.splitlines(), (line, text)
    assert '-m submitit.core._submit' in text
    manifest = json.loads((root / 'sweep.json').read_text())
    assert [r['job'] for r in manifest['runs']] == ['4242_0', '4242_1', '4242_2']
    job = DelayedSubmission.load(root / 'jobs' / '4242_1_submitted.pkl').function
    assert isinstance(job, RunJob) and type(job).__module__ == 'sweeps.job'
    folder = str(root / 'cifar_baseline' / 'manualSeed=1')
    assert job.argv[-4:] == ['-c', folder, '--resume', 'auto']


def test_queued_in_the_scheduler_is_neither_resubmitted_nor_stale(fake_slurm, tmp_path, capsys):
    """Runs whose job squeue still lists (running, pending after a requeue) are skipped; the
    others are submitted. When squeue cannot answer, a launch submits nothing (one line) and
    --status says so and goes on from the files."""
    root = tmp_path / 'grid'
    launch = ['--root', str(root), '--scripts', 'cifar_baseline.py', '--gpus-per-run', '0',
              '--vary', 'manualSeed=0,1,2', '--', '--epochs', '2']
    assert sweep.main(launch) == 0
    fake_slurm.squeue('4242_0|RUNNING|None\n4242_1|PENDING|BeginTime\n77_0|PENDING|None')
    (fake_slurm.folder / 'submitted.sh').unlink()
    capsys.readouterr()
    assert sweep.main(launch) == 0
    out = capsys.readouterr().out
    assert 'skip (running)  cifar_baseline/manualSeed=0' in out
    assert 'skip (queued)  cifar_baseline/manualSeed=1  job 4242_1 PENDING (BeginTime)' in out
    assert '1 to run on slurm, 2 skipped' in out and 'submitted cifar_baseline/manualSeed=2' in out
    assert '--array' not in fake_slurm.submitted     # the one run left: one job
    rows = {next(w for w in line.split() if w.startswith('cifar_baseline/')): line.split()
            for line in status_lines(root, capsys)[2:]}
    assert rows['cifar_baseline/manualSeed=1'][:2] == ['queued', '-/2']
    assert rows['cifar_baseline/manualSeed=0'][:2] == ['running', '-/2']

    fake_slurm.fail('squeue', 'slurm_load_jobs error: Unable to contact slurm controller')
    (fake_slurm.folder / 'submitted.sh').unlink()
    assert sweep.main(launch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'sweep.py: error: squeue --noheader --array --user {getpass.getuser()} '
                   '--format \'%i|%T|%r\' failed: slurm_load_jobs error: Unable to contact slurm '
                   f'controller: cannot tell which runs of {root} SLURM still holds, so '
                   'nothing is submitted (launch where squeue answers)']
    assert fake_slurm.submitted is None
    assert sweep.main(['--root', str(root), '--status']) == 0
    assert 'the states below ignore what SLURM still holds' in capsys.readouterr().err


def test_impossible_slurm_resources_are_refused_before_sbatch(fake_slurm, tmp_path, capsys):
    """sinfo's nodes decide: no GPU, too few CPUs or too little memory, or no such partition,
    is one line naming the flag to change; a refused sbatch leaves the root as it was."""
    root = tmp_path / 'grid'
    launch = ['--root', str(root), '--scripts', 'cifar_baseline.py', '--vary', 'manualSeed=0',
              '--', '--epochs', '2']
    fake_slurm.sinfo('debug*|2|4000|(null)')
    cases = [([], '--gpus-per-run 1 (the default): no node of partition debug has a GPU (sinfo '
                  'lists no gpu GRES); to run on CPUs pass --gpus-per-run 0'),
             (['--gpus-per-run', '0'], '--cpus-per-run 4 (the default): the largest node of '
              'partition debug has 2 CPUs; pass --cpus-per-run 2 or fewer'),
             (['--gpus-per-run', '0', '--cpus-per-run', '2', '--mem-gb', '8'],
              '--mem-gb 8: the largest node of partition debug has 4000 MB; pass --mem-gb 3 or '
              'less'),
             (['--partition', 'gpu'], '--partition gpu: sinfo lists no such partition (there are: '
                                      'debug)')]
    for flags, message in cases:
        assert sweep.main(launch[:6] + flags + launch[6:]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f'sweep.py: error: {message}']
    fake_slurm.sinfo('cpu*|64|256000|(null)\ngpu|16|128000|gpu:a100:4(S:0-1)')
    assert sweep.main(launch[:6] + ['--partition', 'gpu', '--cpus-per-run', '32']
                      + launch[6:]) == 2
    assert 'the largest GPU node of partition gpu has 16 CPUs' in capsys.readouterr().err
    assert not root.exists() and fake_slurm.submitted is None

    fake_slurm.fail('sbatch', 'sbatch: error: Batch job submission failed: Invalid generic '
                              'resource (gres) specification')
    assert sweep.main(launch[:6] + ['--partition', 'gpu'] + launch[6:]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('sweep.py: error: sbatch refused the job array: ') and \
        'Invalid generic resource' in line
    assert not root.exists()                         # no sweep.json, no jobs/ left behind

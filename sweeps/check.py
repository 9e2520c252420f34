"""Every run's own checks, before anything is submitted: each entry script with --check-only.

check_runs() starts one process per script,

    python -m sweeps.check SCRIPT < ARGVS.json

which imports SCRIPT (and torch) once and calls its main() with each command line of ARGVS (a
JSON list of argument lists) plus --check-only, in turn: the flags, the data and the
checkpoint a run would continue are checked as the run itself would, without training or
writing into its folder. It prints one line, CHECKED followed by [[exit status, last line of
output], ...]. Scripts are checked one after the other: a missing dataset is downloaded, once.
"""
import io
import json
import os
import runpy
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

CHECKED = 'sweep-check: '


def check_runs(runs, cwd):
    """[(run, the line its script refused it with)] for every run of RUNS that would fail."""
    by_script = {}
    for run in runs:
        by_script.setdefault(run['script'], []).append(run)
    refusals = []
    for script, group in by_script.items():
        results = check_script(script, [run['argv'][2:] for run in group], cwd)
        refusals += [(run, line) for run, (code, line) in zip(group, results) if code != 0]
    return refusals


def check_script(script, argvs, cwd):
    """[(exit status, last line)] of SCRIPT --check-only for each of ARGVS."""
    proc = subprocess.run([sys.executable, '-m', 'sweeps.check', script], cwd=cwd,
                          input=json.dumps(argvs), capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(CHECKED):
            return json.loads(line[len(CHECKED):])
    last = (proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}'])[-1]
    return [(proc.returncode or 1, f'{os.path.basename(script)} could not be checked: {last}')
            ] * len(argvs)


def check_one(main, script, argv):
    """Exit status and last line of output of SCRIPT's main(ARGV + --check-only)."""
    output = io.StringIO()
    sys.argv = [script, *argv]   # the script's messages name it, as when it runs
    with redirect_stdout(output), redirect_stderr(output):
        try:
            code = main([*argv, '--check-only'])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:   # not an anticipated refusal: still one line
            code = 1
            print(f'{os.path.basename(script)}: {type(e).__name__}: {" ".join(str(e).split())}')
    lines = [line.strip() for line in output.getvalue().splitlines() if line.strip()]
    return [code, lines[-1] if lines else '']


def main():
    script = sys.argv[1]
    argvs = json.load(sys.stdin)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` has it
    entry = runpy.run_path(script, run_name='sweep_check')['main']
    results = [check_one(entry, script, argv) for argv in argvs]
    print(CHECKED + json.dumps(results), flush=True)


if __name__ == '__main__':
    main()

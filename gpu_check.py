"""`make gpu-check`: prove the CUDA path right on this machine's GPU and time it, in one
command sized to a short window, with one summary at the end.

The checks run in order of value, each within what is left of --budget-minutes:
  1. the CUDA tests: pytest -rs tests/test_cuda.py tests/test_benchmark.py (--tests EXPR
     passes -k EXPR to run some of them);
  2. benchmark.py --device cuda with --fast, then with default flags: training images/s of
     each model, the ratio to a conventional DataLoader pipeline, evaluation images/s (the
     paper's four models, or only the two depth-32 ones when the budget is short);
  3. a real-data run: cifar_one.py -a one_resnet --depth 32 on Fashion-MNIST with --fast, for
     as many of its 300 epochs as the rest of the budget allows (then SIGTERM, on which the
     run saves and stops): seconds per epoch, the projected 300-epoch time, the accuracy.
A check whose estimated time would not fit (keeping the real-data run's minimum) is skipped
and listed; one that overruns its share anyway is stopped there and fails.

--out gets gpu-check.json (the summary's numbers), each check's log, and the run's log.txt and
curves.png. Exit status 0 when every check that ran passed, 1 otherwise; on a machine without
a CUDA GPU it says so in one line and exits 1: nothing was verified.

    python gpu_check.py                         # 12 minutes
    python gpu_check.py --budget-minutes 5 --tests graph
    make gpu-check GPU_CHECK_FLAGS='--budget-minutes 8'
"""
import argparse
import csv
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from statistics import median

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
# CIFAR-100 as the paper trains it, for projecting a full run from measured rates.
CIFAR_TRAIN, CIFAR_TEST, EPOCHS = 50_000, 10_000, 300
FASHION_TRAIN = 60_000
SANE_ENSEMBLE_ACCURACY = 60.0  # % after one epoch on Fashion-MNIST (chance 10%; ~88% seen)
ALL_MODELS = ['resnet-32', 'one_resnet-32', 'resnet-110', 'one_resnet-110']
# Seconds each check is expected to take on an H200, from the runs there on 2026-11-30
# (16 CUDA tests with 7 script runs: 108 s; the benchmark: 93 s for four models); a slower
# GPU overruns and is stopped at its share. The real-data run needs its start-up (~10 s),
# one epoch (7 s with recording the graph) and a save.
TESTS_SECONDS, SECONDS_PER_MODEL, RUN_MIN_SECONDS = 300, 25, 60
TESTS_SHARE = 0.5       # at most this much of the budget for the tests
STOP_GRACE = 30         # seconds a stopped check has to save and exit before SIGKILL
CHECKS = ('tests', 'bench-fast', 'bench-default', 'run')


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join('checkpoints', 'gpu-check'),
                   help='folder for the logs, the benchmark JSON, the run and gpu-check.json')
    p.add_argument('--data-dir', default='./data', help='where Fashion-MNIST is (or is put)')
    p.add_argument('--budget-minutes', type=float, default=12.0,
                   help='wall-clock minutes for all checks together')
    p.add_argument('--tests', metavar='EXPR', default=None,
                   help="run only the CUDA tests matching pytest's -k EXPR")
    p.add_argument('--skip', nargs='+', default=[], choices=CHECKS, metavar='CHECK',
                   help=f'checks not to run, of: {" ".join(CHECKS)}')
    args = p.parse_args(argv)
    if not args.budget_minutes > 0:
        p.error(f'--budget-minutes must be > 0, got {args.budget_minutes}')
    return args


class Clock:
    """The budget: seconds left, with the real-data run's minimum held back."""

    def __init__(self, minutes):
        self.deadline = time.monotonic() + minutes * 60

    def left(self, reserve=0.0):
        return max(0.0, self.deadline - time.monotonic() - reserve)


def run_logged(title, command, log, timeout, stop=signal.SIGKILL):
    """Run `command` in the repository with its output in `log`; after `timeout` seconds send
    `stop` to its process group (then SIGKILL after STOP_GRACE). Returns (status, seconds,
    text, stopped)."""
    print(f'gpu-check: {title} (log: {log})', flush=True)
    start = time.monotonic()
    stopped = False
    with open(log, 'w') as f:
        proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                start_new_session=True)
        try:
            status = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            stopped = True
            os.killpg(proc.pid, stop)
            try:
                status = proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                status = proc.wait()
            f.flush()
            print(f'\ngpu-check: sent signal {stop} after {timeout:.0f} s', file=f, flush=True)
    with open(log) as f:
        return status, time.monotonic() - start, f.read(), stopped


def last_line(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else '(no output)'


def skipped(why):
    return {'passed': None, 'skipped': why}


def check_tests(args, clock):
    limit = min(clock.left(args.reserve), args.budget_minutes * 60 * TESTS_SHARE)
    if limit < TESTS_SECONDS and args.tests is None:
        return skipped(f'the CUDA tests take ~{TESTS_SECONDS} s, {limit:.0f} s of the budget '
                       'was theirs (--tests EXPR runs some)')
    command = [sys.executable, '-m', 'pytest', '-q', '-rfEs', '-p', 'no:cacheprovider',
               'tests/test_cuda.py', 'tests/test_benchmark.py']
    if args.tests:
        command += ['-k', args.tests]
    # SIGINT at the limit: pytest then still prints its failures and counts
    status, seconds, text, stopped = run_logged('CUDA tests', command,
                                                os.path.join(args.out, 'tests.log'), limit,
                                                stop=signal.SIGINT)
    counts = {kind: int(n) for n, kind in re.findall(r'(\d+) (passed|failed|skipped|errors?)', text)}
    reasons = sorted(set(re.findall(r'^SKIPPED \[\d+\] [^:]+:\d+: (.*)$', text, re.M)))
    message = f'stopped after {seconds:.0f} s, its share of the budget' if stopped else (
        '' if status == 0 else last_line(text))
    return {'passed': status == 0, 'status': status, 'seconds': round(seconds), 'counts': counts,
            'skip_reasons': reasons, 'message': message}


def check_benchmark(name, flags, args, clock):
    """benchmark.py on the GPU: all four models when they fit, else the depth-32 pair."""
    limit = clock.left(args.reserve)
    models = next((m for m in (ALL_MODELS, ALL_MODELS[:2])
                   if len(m) * SECONDS_PER_MODEL <= limit), None)
    if models is None:
        return skipped(f'takes ~{2 * SECONDS_PER_MODEL} s, {limit:.0f} s left')
    json_path = os.path.join(args.out, f'bench-{name}.json')
    if os.path.exists(json_path):
        os.remove(json_path)
    command = [sys.executable, 'benchmark.py', '--device', 'cuda', '--models', *models,
               '--steps', '30', '--repeats', '3', '--warmup', '10', '--conventional-repeats', '2',
               *flags, '--json', json_path]
    status, seconds, text, stopped = run_logged(
        f'benchmark {" ".join(flags) or "default flags"}', command,
        os.path.join(args.out, f'bench-{name}.log'), limit)
    result = {'passed': status == 0, 'status': status, 'seconds': round(seconds), 'flags': flags,
              'message': '' if status == 0 else last_line(text), 'models': []}
    if status == 0:
        with open(json_path) as f:
            result['models'] = json.load(f)['results']
    return result


def check_fashion_run(args, clock):
    """one_resnet-32 on Fashion-MNIST under --fast, stopped by SIGTERM when the budget ends."""
    limit = clock.left()
    if limit < RUN_MIN_SECONDS:
        return skipped(f'needs {RUN_MIN_SECONDS} s, {limit:.0f} s left')
    folder = os.path.join(args.out, 'fashion-one-32')
    command = [sys.executable, 'cifar_one.py', '-d', 'fashionmnist', '--data-dir', args.data_dir,
               '--epochs', str(EPOCHS), '--fast', '--device', 'cuda', '--manualSeed', '1',
               '-c', folder, '--overwrite']
    status, seconds, text, stopped = run_logged(
        f'Fashion-MNIST one_resnet-32 --fast, up to {EPOCHS} epochs in {limit:.0f} s', command,
        os.path.join(args.out, 'fashion.log'), limit - STOP_GRACE, stop=signal.SIGTERM)
    result = {'passed': False, 'status': status, 'seconds': round(seconds), 'message': ''}
    summary = os.path.join(folder, 'summary.csv')
    rows = []
    if os.path.exists(summary):
        with open(summary) as f:
            rows = list(csv.DictReader(f))
    for name in ('log.txt', 'curves.png'):
        if os.path.exists(os.path.join(folder, name)):
            shutil.copy(os.path.join(folder, name), os.path.join(args.out, f'fashion-{name}'))
    # Stopped by our SIGTERM at the budget's end (exit 143, the run saved) is the plan.
    if not rows or (status != 0 and not (stopped and status == 128 + signal.SIGTERM)):
        result['message'] = last_line(text) if status else 'no epoch finished in the budget'
        return result
    epoch_seconds = [float(r['seconds']) for r in rows]
    pace = median(epoch_seconds[1:]) if len(rows) > 1 else epoch_seconds[0]
    last = rows[-1]
    result.update(epochs=len(rows), epoch_seconds=epoch_seconds, seconds_per_epoch=pace,
                  projected_300_minutes=(sum(epoch_seconds) + (EPOCHS - len(rows)) * pace) / 60,
                  test_acc_1=float(last['test_acc_1']), test_acc_ens=float(last['test_acc_ens']))
    result['projected_300_cifar_minutes'] = result['projected_300_minutes'] * CIFAR_TRAIN / FASHION_TRAIN
    result['passed'] = result['test_acc_ens'] >= SANE_ENSEMBLE_ACCURACY
    if not result['passed']:
        result['message'] = (f'ensemble test top-1 {result["test_acc_ens"]:.2f}% after '
                             f'{len(rows)} epoch(s), below the {SANE_ENSEMBLE_ACCURACY:.0f}% '
                             'a working run reaches')
    return result


def projected_minutes(row):
    """A 300-epoch CIFAR-100 run at the benchmark's training and evaluation rates."""
    seconds = EPOCHS * (CIFAR_TRAIN / row['train_img_s'] + CIFAR_TEST / row['eval_img_s'])
    return seconds / 60


def verdict(result):
    return {True: 'PASS', False: 'FAIL', None: 'SKIP'}[result['passed']]


def print_summary(gpu, results):
    print(f'\n==== gpu-check summary: {gpu} ====')
    tests = results['tests']
    if 'skipped' in tests:
        print(f'SKIP  CUDA tests: {tests["skipped"]}')
    else:
        counts = ', '.join(f'{n} {kind}' for kind, n in tests['counts'].items()) or 'no count'
        print(f'{verdict(tests)}  CUDA tests: {counts} in {tests["seconds"]} s'
              + (f': {tests["message"]}' if tests['message'] else ''))
        for reason in tests['skip_reasons']:
            print(f'        skipped: {reason}')
    for name in ('fast', 'default'):
        bench = results[f'benchmark_{name}']
        title = f'benchmark {"--fast" if name == "fast" else "default flags"}'
        if 'skipped' in bench:
            print(f'SKIP  {title}: {bench["skipped"]}')
            continue
        print(f'{verdict(bench)}  {title} ({bench["seconds"]} s)'
              + (f': {bench["message"]}' if bench['message'] else ''))
        for r in bench['models']:
            ratio = f'{r["vs_conventional"]:.2f}x conventional' if r['vs_conventional'] else ''
            print(f'        {r["model"]:<15} train {r["train_img_s"]:>8.0f} img/s ({ratio}), '
                  f'eval {r["eval_img_s"]:>8.0f} img/s, {r["ratio_to_matmul"]:.0%} of '
                  f'{r["matmul_dtype"]} matmul, peak {r["peak_memory_gib"]:.2f} GiB; '
                  f'300 CIFAR epochs ~{projected_minutes(r):.1f} min')
    run = results['fashion']
    title = 'Fashion-MNIST one_resnet-32 --fast'
    if 'skipped' in run:
        print(f'SKIP  {title}: {run["skipped"]}')
        return
    line = f'{verdict(run)}  {title} ({run["seconds"]} s)'
    if 'epochs' in run:
        line += (f': {run["epochs"]} of {EPOCHS} epochs, {run["seconds_per_epoch"]:.2f} s/epoch '
                 f'(epoch 1 {run["epoch_seconds"][0]:.2f} s); test top-1 branch 1 '
                 f'{run["test_acc_1"]:.2f}%, ensemble {run["test_acc_ens"]:.2f}%; {EPOCHS} epochs '
                 f'~{run["projected_300_minutes"]:.1f} min (~{run["projected_300_cifar_minutes"]:.1f}'
                 ' min at CIFAR\'s 50k training images)')
    print(line + (f': {run["message"]}' if run['message'] else ''))


def describe_gpu():
    return (f'{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}, torch {torch.__version__}, '
            f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')


def main(argv=None):
    args = parse(argv)
    args.out, args.data_dir = os.path.abspath(args.out), os.path.abspath(args.data_dir)
    if not torch.cuda.is_available():
        build = f'built for CUDA {torch.version.cuda}' if torch.version.cuda else 'a CPU-only build'
        print(f'gpu-check: no CUDA GPU on this machine (torch {torch.__version__}, {build}): '
              'nothing was verified', file=sys.stderr)
        return 1
    clock = Clock(args.budget_minutes)
    args.reserve = 0 if 'run' in args.skip else RUN_MIN_SECONDS  # held for the real-data run
    os.makedirs(args.out, exist_ok=True)
    gpu = describe_gpu()
    results = {'gpu': gpu, 'date': datetime.date.today().isoformat(),
               'budget_minutes': args.budget_minutes}
    checks = {'tests': lambda: check_tests(args, clock),
              'benchmark_fast': lambda: check_benchmark('fast', ['--fast'], args, clock),
              'benchmark_default': lambda: check_benchmark('default', [], args, clock),
              'fashion': lambda: check_fashion_run(args, clock)}
    for (key, check), name in zip(checks.items(), CHECKS):
        results[key] = skipped('--skip') if name in args.skip else check()
    ran = [r for r in results.values() if isinstance(r, dict) and r['passed'] is not None]
    results['passed'] = passed = bool(ran) and all(r['passed'] for r in ran)
    with open(os.path.join(args.out, 'gpu-check.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print_summary(gpu, results)
    print(f'gpu-check: {"all that ran passed" if passed else "FAILED"} (details in '
          f'{os.path.join(args.out, "gpu-check.json")} and the logs beside it)')
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())

"""`make gpu-check`: prove the CUDA path right on this machine's GPU and measure it, in one
command, with one summary at the end.

  1. the CUDA tests: pytest -rs tests/test_cuda.py tests/test_benchmark.py (each check on the
     GPU, and the same comparisons CPU against CPU);
  2. benchmark.py --device cuda with default flags, then with --fast: training images/s of
     each model, the ratio to a conventional DataLoader pipeline, evaluation images/s;
  3. a short real-data run: cifar_one.py -d fashionmnist --epochs 2 --fast on the GPU;
  4. for information (not pass/fail): one_resnet-32 under --fast with CUDA graphs
     (--compile-mode reduce-overhead), which the training scripts do not use yet.
Logs and results go into --out (gpu-check.json holds the summary's numbers). Exit status 0
when everything passed, 1 otherwise; on a machine without a CUDA GPU it says so in one line
and exits 1: nothing was verified.

    python gpu_check.py            # the paper's four models in the benchmark (compiling them
                                   # for --fast takes most of the time: expect tens of minutes)
    python gpu_check.py --quick    # resnet-32 and one_resnet-32 only, shorter timings
    make gpu-check GPU_CHECK_FLAGS=--quick
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
# CIFAR-100 as the paper trains it, for projecting a full run from measured rates.
CIFAR_TRAIN, CIFAR_TEST, EPOCHS = 50_000, 10_000, 300
FASHION_TRAIN = 60_000
SANE_ENSEMBLE_ACCURACY = 60.0  # % after 2 epochs on Fashion-MNIST (chance 10%; ~90% expected)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=os.path.join('checkpoints', 'gpu-check'),
                   help='folder for the logs, the benchmark JSON, the run and gpu-check.json')
    p.add_argument('--data-dir', default='./data', help='where Fashion-MNIST is (or is put)')
    p.add_argument('--quick', action='store_true',
                   help='benchmark resnet-32 and one_resnet-32 only, with shorter timings')
    return p.parse_args(argv)


def run_logged(title, command, log, timeout):
    """Run `command` in the repository with its output in `log`; returns (status, seconds, text)."""
    print(f'gpu-check: {title} (log: {log})', flush=True)
    start = time.time()
    with open(log, 'w') as f:
        try:
            status = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, text=True,
                                    cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            status = 124
            f.write(f'\ngpu-check: stopped after {timeout} s\n')
    with open(log) as f:
        return status, time.time() - start, f.read()


def last_line(text):
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else '(no output)'


def check_tests(log):
    status, seconds, text = run_logged(
        'CUDA tests', [sys.executable, '-m', 'pytest', '-q', '-rs', 'tests/test_cuda.py',
                       'tests/test_benchmark.py'], log, timeout=3600)
    counts = dict((kind, int(n)) for n, kind in re.findall(r'(\d+) (passed|failed|skipped|error)', text))
    skipped = sorted(set(re.findall(r'^SKIPPED \[\d+\] [^:]+:\d+: (.*)$', text, re.M)))
    return {'passed': status == 0, 'status': status, 'seconds': round(seconds), 'counts': counts,
            'skip_reasons': skipped, 'message': '' if status == 0 else last_line(text)}


def check_benchmark(name, flags, out, quick, informational=False):
    json_path = os.path.join(out, f'bench-{name}.json')
    timing = (['--models', 'resnet-32', 'one_resnet-32', '--steps', '30', '--repeats', '3']
              if quick else ['--steps', '50', '--repeats', '3'])
    command = [sys.executable, 'benchmark.py', '--device', 'cuda', *timing, '--warmup', '10',
               '--conventional-repeats', '3', *flags, '--json', json_path]
    if os.path.exists(json_path):
        os.remove(json_path)
    status, seconds, text = run_logged(f'benchmark {name} ({" ".join(flags) or "default flags"})',
                                       command, os.path.join(out, f'bench-{name}.log'), timeout=3600)
    result = {'passed': status == 0, 'status': status, 'seconds': round(seconds),
              'flags': flags, 'message': '' if status == 0 else last_line(text), 'models': [],
              'informational': informational}
    if status == 0:
        with open(json_path) as f:
            result['models'] = json.load(f)['results']
    return result


def check_fashion_run(args):
    folder = os.path.join(args.out, 'fashion-one-32')
    command = [sys.executable, 'cifar_one.py', '-d', 'fashionmnist', '--data-dir', args.data_dir,
               '--epochs', '2', '--fast', '--device', 'cuda', '--manualSeed', '1', '-c', folder,
               '--overwrite']
    status, seconds, text = run_logged('Fashion-MNIST run (one_resnet-32, 2 epochs, --fast)', command,
                                       os.path.join(args.out, 'fashion.log'), timeout=3600)
    result = {'passed': False, 'status': status, 'seconds': round(seconds), 'message': ''}
    if status != 0:
        result['message'] = last_line(text)
        return result
    with open(os.path.join(folder, 'summary.csv')) as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    result.update(epoch_seconds=[float(r['seconds']) for r in rows],
                  test_acc_1=float(last['test_acc_1']), test_acc_ens=float(last['test_acc_ens']))
    result['passed'] = result['test_acc_ens'] >= SANE_ENSEMBLE_ACCURACY
    if not result['passed']:
        result['message'] = (f'ensemble test top-1 {result["test_acc_ens"]:.2f}% after 2 epochs, '
                             f'below the {SANE_ENSEMBLE_ACCURACY:.0f}% a working run reaches')
    return result


def projected_minutes(row):
    """A 300-epoch CIFAR-100 run at the benchmark's training and evaluation rates."""
    seconds = EPOCHS * (CIFAR_TRAIN / row['train_img_s'] + CIFAR_TEST / row['eval_img_s'])
    return seconds / 60


def print_summary(gpu, results):
    mark = {True: 'PASS', False: 'FAIL'}
    print(f'\n==== gpu-check summary: {gpu} ====')
    tests = results['tests']
    counts = ', '.join(f'{n} {kind}' for kind, n in tests['counts'].items()) or 'no count'
    print(f'{mark[tests["passed"]]}  CUDA tests: {counts} in {tests["seconds"]} s'
          + (f': {tests["message"]}' if tests['message'] else ''))
    for reason in tests['skip_reasons']:
        print(f'        skipped: {reason}')
    for name in ('default', 'fast', 'cuda_graphs'):
        bench = results[f'benchmark_{name}']
        verdict = 'info' if bench['informational'] else mark[bench['passed']]
        print(f'{verdict:<4}  benchmark {" ".join(bench["flags"]) or "default flags"}'
              f' ({bench["seconds"]} s)' + (f': {bench["message"]}' if bench['message'] else ''))
        for r in bench['models']:
            ratio = f'{r["vs_conventional"]:.2f}x conventional' if r['vs_conventional'] else ''
            print(f'        {r["model"]:<15} train {r["train_img_s"]:>8.0f} img/s ({ratio}), '
                  f'eval {r["eval_img_s"]:>8.0f} img/s, {r["ratio_to_matmul"]:.0%} of '
                  f'{r["matmul_dtype"]} matmul, peak {r["peak_memory_gib"]:.2f} GiB; '
                  f'300 CIFAR epochs ~{projected_minutes(r):.0f} min')
    run = results['fashion']
    line = f'{mark[run["passed"]]}  Fashion-MNIST one_resnet-32, 2 epochs --fast ({run["seconds"]} s)'
    if 'epoch_seconds' in run:
        first, second = run['epoch_seconds'][0], run['epoch_seconds'][-1]
        full = EPOCHS * second * CIFAR_TRAIN / FASHION_TRAIN / 60
        line += (f': epoch 1 {first:.1f} s (compiling), epoch 2 {second:.1f} s; test top-1 branch 1 '
                 f'{run["test_acc_1"]:.2f}%, ensemble {run["test_acc_ens"]:.2f}%; 300 CIFAR epochs '
                 f'at epoch 2\'s pace ~{full:.0f} min')
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
    os.makedirs(args.out, exist_ok=True)
    gpu = describe_gpu()
    results = {'gpu': gpu, 'tests': check_tests(os.path.join(args.out, 'tests.log')),
               'benchmark_default': check_benchmark('default', [], args.out, args.quick),
               'benchmark_fast': check_benchmark('fast', ['--fast'], args.out, args.quick),
               'fashion': check_fashion_run(args),
               'benchmark_cuda_graphs': check_benchmark(
                   'cuda-graphs', ['--fast', '--compile-mode', 'reduce-overhead', '--models',
                                   'one_resnet-32'], args.out, args.quick, informational=True)}
    passed = all(r['passed'] for r in results.values()
                 if isinstance(r, dict) and not r.get('informational'))
    results['passed'] = passed
    with open(os.path.join(args.out, 'gpu-check.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print_summary(gpu, results)
    print(f'gpu-check: {"all passed" if passed else "FAILED"} (details in '
          f'{os.path.join(args.out, "gpu-check.json")} and the logs beside it)')
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())

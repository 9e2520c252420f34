#!/usr/bin/env bash
# Baseline ResNet-32 on CIFAR-100 with the paper's settings. Extra arguments are passed
# through and win over these (e.g. --epochs 1, --resume auto, --data-dir DIR).
# GPU: chosen automatically (CUDA_VISIBLE_DEVICES or --gpu-id N to pick one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
exec "$python" "$here/cifar_baseline.py" -a resnet --dataset cifar100 --depth 32 --epochs 300 \
    --schedule 151 225 --gamma 0.1 --lr 0.1 --wd 1e-4 --train-batch 128 --test-batch 100 \
    --checkpoint checkpoints/cifar100/baseline-32 "$@"

#!/usr/bin/env bash
# ONE DenseNet-BC (L=190, k=40) on CIFAR-100 with the ONE paper's CIFAR protocol (the ResNet
# scripts' settings: the paper gives no other for this network; see docs/NETWORKS.md). Extra
# arguments are passed through and win over these (e.g. --dataset cifar10, --epochs 1, --resume
# auto). GPU: chosen automatically (CUDA_VISIBLE_DEVICES or --gpu-id N to pick one).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
exec "$python" "$here/cifar_one.py" -a densenet --depth 190 --growth-rate 40 \
    --dataset cifar100 --epochs 300 --schedule 151 225 --gamma 0.1 --lr 0.1 --wd 1e-4 \
    --train-batch 128 --test-batch 100 --consistency_rampup 80 \
    --checkpoint checkpoints/cifar100/ONE-DenseNetBC190 "$@"

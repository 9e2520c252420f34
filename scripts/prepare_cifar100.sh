#!/usr/bin/env bash
# CIFAR-100 for a machine that cannot download it: rebuilt pixel-exact (the official train/test
# split) from a bare git copy of github.com/zeruishao/FedLoRE by the shared tool
# cifar100_from_fedlore.py (../shared/data/README.md), checked against the digest every copy
# rebuilt that way has, and cut into pieces small enough to carry one at a time (3 of at most
# 60 MiB; docs/REPRODUCE.md says how a GPU session uses them).
#
#   scripts/prepare_cifar100.sh FEDLORE_GIT_DIR [TOOLS_DIR]   # TOOLS_DIR: ../shared/data
#
# Writes, in this checkout's git-ignored data/ (or $DATA):
#   data/cifar-100-python/           train, test, meta (torchvision's python format; about 20 s)
#   data/transfer/cifar100.tar.NNN   the folder as a tar, in pieces of CHUNK_MIB (default 60)
# A copy already in data/cifar-100-python is kept and checked, not rebuilt. Joined again with
#   cat data/transfer/cifar100.tar.* | tar -C data -xf -
# Its checksums are not the official release's: train on it with --unofficial-data.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3)}
# sha256 of `cat train test` of the copy cifar100_from_fedlore.py builds from FedLoRE's commit
# d245aaf98f9742255aa95f0433f137e4b8c5149a (rebuilt twice here: the tool is deterministic).
expected=01564d34c90544f41dbbb5c439832c68ce7da30b3e785fef5c7681683c7c5793
chunk_mib=${CHUNK_MIB:-60}   # a device call carries at most 64 MiB, the checkout (~1 MiB) included
data=${DATA:-$here/data}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: scripts/prepare_cifar100.sh FEDLORE_GIT_DIR [TOOLS_DIR]" >&2
    exit 2
fi
git_dir=$1
tools=${2:-$here/../shared/data}
if [ ! -f "$tools/cifar100_from_fedlore.py" ]; then
    echo "prepare_cifar100.sh: error: no cifar100_from_fedlore.py in $tools (pass TOOLS_DIR)" >&2
    exit 2
fi
copy=$data/cifar-100-python
if [ ! -f "$copy/train" ] || [ ! -f "$copy/test" ]; then
    "$python" "$tools/cifar100_from_fedlore.py" "$git_dir" "$copy"
fi
digest=$(cat "$copy/train" "$copy/test" | sha256sum | cut -d' ' -f1)
if [ "$digest" != "$expected" ]; then
    echo "prepare_cifar100.sh: error: $copy has sha256 $digest, not the rebuilt copy's" \
         "$expected: move it away and run again" >&2
    exit 2
fi
mkdir -p "$data/transfer"
rm -f "$data"/transfer/cifar100.tar.[0-9][0-9][0-9]
tar -C "$data" -cf - cifar-100-python |
    split -b "${chunk_mib}M" -d -a 3 - "$data/transfer/cifar100.tar."
echo "$copy: sha256 $digest (the rebuilt copy); pieces to carry:"
ls -l "$data"/transfer/cifar100.tar.*

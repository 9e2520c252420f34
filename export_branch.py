"""Export branch K of a trained ONE checkpoint as a plain `resnet` checkpoint for deployment.

The shared trunk and branch K's stage 3 and classifier form exactly a CIFAR ResNet of the
same depth; the other branches and the gate are dropped. Evaluate the result with
    python cifar_baseline.py -e --resume OUT --dataset DATASET --depth DEPTH
"""
import argparse
import os
import sys

from models import branch_state_dict
from utils.checkpoint import FORMAT_VERSION, load_checkpoint, save_atomic
from utils.errors import UserError


def export(path, branch, out, overwrite=False):
    state = load_checkpoint(path)
    if state.get('arch') != 'one_resnet':
        raise UserError(f'{path!r} holds a {state.get("arch")} model, not one_resnet')
    if not 1 <= branch <= state['num_branches']:
        raise UserError(f'--branch must be 1..{state["num_branches"]}, got {branch}')
    if os.path.exists(out) and not overwrite:
        raise UserError(f'{out!r} exists; pass --overwrite to replace it')
    save_atomic({'format': FORMAT_VERSION, 'arch': 'resnet', 'depth': state['depth'],
                 'dataset': state['dataset'], 'num_branches': 1,
                 'num_classes': state['num_classes'], 'epoch': state['epoch'],
                 'state_dict': branch_state_dict(state['state_dict'], branch - 1),
                 'exported_from': {'checkpoint': os.path.abspath(path), 'branch': branch}}, out)
    return state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('checkpoint', help='a one_resnet checkpoint (e.g. model_best.pth.tar)')
    p.add_argument('--branch', type=int, default=1, help='1-based branch to keep')
    p.add_argument('-o', '--out', help='output file (default: beside the input, '
                                       'resnet_branchK.pth.tar)')
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(args.checkpoint),
                                   f'resnet_branch{args.branch}.pth.tar')
    try:
        state = export(args.checkpoint, args.branch, out, args.overwrite)
    except UserError as e:
        print(f'{p.prog}: error: {e}', file=sys.stderr)
        return 2
    print(f'wrote {out}: resnet-{state["depth"]} on {state["dataset"]} from branch '
          f'{args.branch} of {args.checkpoint} (epoch {state["epoch"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Export the deployable network of a checkpoint as a plain `resnet` checkpoint.

For ONE: branch K (the shared trunk, branch K's own stages and classifier form exactly a
CIFAR ResNet of the same depth; the other branches and the gate are dropped). Every method
says which of its members it can export (methods/*.py, `deployable`). Evaluate the result with
    python cifar_baseline.py -e --resume OUT --dataset DATASET --depth DEPTH
"""
import os
import sys

from methods import METHODS
from utils.checkpoint import FORMAT_VERSION, load_checkpoint, save_atomic
from utils.errors import Parser, UserError, one_line_errors


def export(path, member, out, overwrite=False):
    state = load_checkpoint(path)
    method = METHODS.get(state.get('method'))
    if method is None:
        raise UserError(f'{path!r} was saved by an unknown method {state.get("method")!r}')
    if os.path.exists(out) and not overwrite:
        raise UserError(f'{out!r} exists; pass --overwrite to replace it')
    plain = method.deployable(state, member)
    save_atomic({'format': FORMAT_VERSION, 'method': 'baseline', 'arch': 'resnet',
                 'depth': state['depth'], 'dataset': state['dataset'], 'num_branches': 1,
                 **({'depth_rule': state['depth_rule']} if 'depth_rule' in state else {}),
                 'num_classes': state['num_classes'], 'epoch': state['epoch'],
                 'state_dict': plain,
                 'exported_from': {'checkpoint': os.path.abspath(path), 'method': method.name,
                                   'member': member, 'run_id': state.get('run_id')}}, out)
    return state


def main(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument('checkpoint', help="a checkpoint of any method (e.g. model_best.pth.tar)")
    p.add_argument('--branch', '--member', type=int, default=1, dest='member',
                   help="1-based member to keep (ONE: the branch; DML: the network)")
    p.add_argument('-o', '--out', help='output file (default: beside the input, '
                                       'resnet_branchK.pth.tar)')
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(args.checkpoint),
                                   f'resnet_branch{args.member}.pth.tar')
    return one_line_errors(p.prog, lambda: export_and_say(args, out))


def export_and_say(args, out):
    state = export(args.checkpoint, args.member, out, args.overwrite)
    print(f'wrote {out}: resnet-{state["depth"]} on {state["dataset"]} from member '
          f'{args.member} of {args.checkpoint} (epoch {state["epoch"]})')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Export the deployable network of a checkpoint as a plain network's checkpoint.

For ONE: branch K (the shared trunk, branch K's own stages and classifier form exactly the
plain network of the same depth: a CIFAR ResNet for one_resnet, a ResNeXt for -a resnext, ...;
the other branches and the gate are dropped). Every method says which of its members it can
export (methods/*.py, `deployable`). Evaluate the result with
    python cifar_baseline.py -e --resume OUT --dataset DATASET -a ARCH --depth DEPTH [its flags]
"""
import os
import sys

from methods import METHODS
from methods.networks import NETWORK_FLAGS, backbone_of
from utils.checkpoint import FORMAT_VERSION, load_checkpoint, save_atomic
from utils.errors import Parser, UserError, one_line_errors


def export(path, member, out=None, overwrite=False):
    """Write member `member` (1-based) of checkpoint `path` as a plain network's checkpoint
    into `out` (default: ARCH_branchK.pth.tar beside `path`); returns (what it wrote, out)."""
    state = load_checkpoint(path)
    method = METHODS.get(state.get('method'))
    if method is None:
        raise UserError(f'{path!r} was saved by an unknown method {state.get("method")!r}')
    state = method.upgrade_checkpoint(state)
    arch = backbone_of(state['arch'])
    out = out or os.path.join(os.path.dirname(path), f'{arch}_branch{member}.pth.tar')
    if os.path.exists(out) and not overwrite:
        raise UserError(f'{out!r} exists; pass --overwrite to replace it')
    plain = method.deployable(state, member)
    network = {**{key: state[key] for key in NETWORK_FLAGS if key in state},
               **method.deployed_keywords(state, member)}
    exported = {'format': FORMAT_VERSION, 'method': 'baseline', 'arch': arch,
                'depth': state['depth'],
                'dataset': state['dataset'], 'num_branches': 1, **network,
                'num_classes': state['num_classes'], 'epoch': state['epoch'],
                'state_dict': plain,
                'exported_from': {'checkpoint': os.path.abspath(path), 'method': method.name,
                                  'member': member, 'run_id': state.get('run_id')}}
    save_atomic(exported, out)
    return exported, out


def main(argv=None):
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument('checkpoint', help="a checkpoint of any method (e.g. model_best.pth.tar)")
    p.add_argument('--branch', '--member', type=int, default=1, dest='member',
                   help="1-based member to keep (ONE: the branch; DML: the network)")
    p.add_argument('-o', '--out', help='output file (default: beside the input, '
                                       'ARCH_branchK.pth.tar, e.g. resnet_branch1.pth.tar)')
    p.add_argument('--overwrite', action='store_true')
    args = p.parse_args(argv)
    return one_line_errors(p.prog, lambda: export_and_say(args))


def evaluation_command(exported, out):
    """The cifar_baseline.py -e command that evaluates an exported network: its -a, depth,
    dataset and every network flag it records."""
    flags = []
    for key in NETWORK_FLAGS:
        value, flag = exported.get(key), '--' + key.replace('_', '-')
        if isinstance(value, bool):
            flags.append(flag if value else '--no-' + flag[2:])
        elif value is not None:
            flags += [flag, str(value)]
    return ' '.join(['python cifar_baseline.py -e --resume', out, '-a', exported['arch'],
                     '--depth', str(exported['depth']), '--dataset', exported['dataset'], *flags])


def export_and_say(args):
    exported, out = export(args.checkpoint, args.member, args.out, args.overwrite)
    print(f'wrote {out}: {exported["arch"]}-{exported["depth"]} on {exported["dataset"]} '
          f'from member {args.member} of {args.checkpoint} (epoch {exported["epoch"]}); '
          f'evaluate it with: {evaluation_command(exported, out)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""Command-line flags shared by cifar_one.py and cifar_baseline.py (the original's names)."""
import argparse

from .data import LOADERS


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit status 2, instead of the usage block."""
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def build_parser(description, arch, one=False):
    p = Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-d', '--dataset', default='cifar10', choices=sorted(LOADERS))
    p.add_argument('--data-dir', default='./data',
                   help='where datasets are found or downloaded by torchvision')
    p.add_argument('-j', '--workers', default=4, type=int,
                   help='accepted for compatibility; batches are built on the device, '
                        'so no loader processes are used')
    p.add_argument('--epochs', default=300, type=int, help='total epochs to run')
    p.add_argument('--start-epoch', default=0, type=int,
                   help='epoch to start at (0-based; LR and ramp-up follow it); '
                        '--resume overrides it')
    p.add_argument('--train-batch', default=128, type=int,
                   help='global training batch size (shared over torchrun ranks)')
    p.add_argument('--test-batch', default=100, type=int, help='test batch size')
    p.add_argument('--lr', '--learning-rate', default=0.1, type=float, dest='lr')
    p.add_argument('--drop', '--dropout', default=0.0, type=float, dest='drop',
                   help='dropout ratio; the CIFAR ResNets have no dropout, so only 0 is valid')
    p.add_argument('--schedule', type=int, nargs='+', default=[151, 225],
                   help='0-based epochs at which the LR is multiplied by --gamma')
    p.add_argument('--gamma', type=float, default=0.1, help='LR multiplier at each milestone')
    p.add_argument('--momentum', default=0.9, type=float)
    p.add_argument('--weight-decay', '--wd', default=1e-4, type=float, dest='weight_decay')
    p.add_argument('-c', '--checkpoint', default=None,
                   help='run folder (default: checkpoints/DATASET/ARCH-DEPTH)')
    p.add_argument('--resume', default='', metavar='PATH',
                   help="checkpoint to continue from (its folder becomes the run folder); "
                        "'auto' resumes the run folder's checkpoint.pth.tar if there is one")
    p.add_argument('--overwrite', action='store_true',
                   help='start over in a run folder that already holds a run')
    p.add_argument('-a', '--arch', default=arch, choices=[arch])
    p.add_argument('--depth', type=int, default=32, help='6n+2: 32 and 110 in the paper')
    if one:
        p.add_argument('--num-branches', type=int, default=3, help='m, the number of branches')
        p.add_argument('--temperature', type=float, default=3.0, help='distillation T')
        p.add_argument('--consistency_rampup', '--consistency-rampup', type=float, default=80,
                       dest='consistency_rampup', help='epochs of the sigmoid ramp-up')
    p.add_argument('--manualSeed', type=int, default=None, help='random seed')
    p.add_argument('-e', '--evaluate', action='store_true',
                   help='only evaluate the --resume checkpoint on the test set')
    p.add_argument('--gpu-id', default=None, type=str, help='CUDA device index to use')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--train-subset', type=int, default=0, metavar='N',
                   help='train on the first N training images only (0: all)')
    p.add_argument('--sync-bn', action='store_true',
                   help='synchronised BatchNorm across torchrun ranks')
    p.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=True,
                   help='NHWC memory layout (same mathematics; faster convolutions on CPU and '
                        'on tensor-core GPUs)')
    p.add_argument('--compile', action='store_true', help='torch.compile the training model')
    p.add_argument('--amp', default='off', choices=['off', 'bf16', 'fp16'],
                   help='autocast mixed precision (fp16 uses a gradient scaler)')
    return p


"""The published tables this project can train: each a few rows (a network on a dataset),
each row the sweeps of its runs. The numbers they are compared with are methods/published.py's,
found for every run the way report.py finds them (reproductions/columns.py)."""
from dataclasses import dataclass

BASELINE, ONE = 'cifar_baseline.py', 'cifar_one.py'
PEERS = (BASELINE, 'cifar_dml.py', 'cifar_clilr.py', 'cifar_okddip.py', ONE)

# The flags that build each network; each method's own default -a for the ResNets (ONE's,
# CL-ILR's and OKDDip's branched layouts of the same CIFAR ResNet).
RESNET_32 = ('--depth', '32')
RESNET_110 = ('--depth', '110')
RESNEXT_29 = ('-a', 'resnext', '--depth', '29', '--cardinality', '8', '--base-width', '64')
DENSENET_BC_190 = ('-a', 'densenet', '--depth', '190', '--growth-rate', '40')


@dataclass(frozen=True)
class Part:
    """One sweep of a row: its scripts, flags of its own (an ablation's) and --vary axes
    besides the seeds. `name` is its folder under the row's ('' : the row's own)."""
    scripts: tuple
    flags: tuple = ()
    vary: tuple = ()
    name: str = ''


@dataclass(frozen=True)
class Row:
    """One network on the table's dataset: `name` is its folder and --rows' value."""
    name: str
    network: tuple
    parts: tuple


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    dataset: str
    rows: tuple

    def row(self, name):
        return next(row for row in self.rows if row.name == name)


def baseline_and_one(name, network):
    return Row(name, network, (Part((BASELINE, ONE)),))


TABLES = {table.name: table for table in (
    Table('one-cifar100', "ONE paper's CIFAR-100 table: the baseline, ONE (branch 1) and ONE-E "
                          '(its gated ensemble) on ResNet-32 and ResNet-110', 'cifar100',
          (baseline_and_one('resnet-32', RESNET_32), baseline_and_one('resnet-110', RESNET_110))),
    Table('one-cifar10', "ONE paper's CIFAR-10 table: the baseline, ONE and ONE-E on ResNet-32 "
                         'and ResNet-110', 'cifar10',
          (baseline_and_one('resnet-32', RESNET_32), baseline_and_one('resnet-110', RESNET_110))),
    Table('one-cifar100-resnext-densenet', "ONE paper's larger networks on CIFAR-100: the "
                                           'baseline, ONE and ONE-E on ResNeXt-29 (8x64d) and '
                                           'DenseNet-BC (L=190, k=40)', 'cifar100',
          (baseline_and_one('resnext-29', RESNEXT_29),
           baseline_and_one('densenet-bc-190', DENSENET_BC_190))),
    Table('one-cifar10-resnext-densenet', "ONE paper's larger networks on CIFAR-10: the "
                                          'baseline, ONE and ONE-E on ResNeXt-29 (8x64d) and '
                                          'DenseNet-BC (L=190, k=40)', 'cifar10',
          (baseline_and_one('resnext-29', RESNEXT_29),
           baseline_and_one('densenet-bc-190', DENSENET_BC_190))),
    Table('one-branches', "ONE paper's branch-count study: ONE and ONE-E with m = 1 to 5 "
                          'branches beside the baseline, ResNet-32 on CIFAR-100', 'cifar100',
          (Row('resnet-32', RESNET_32,
               (Part((BASELINE, ONE), vary=('num-branches=1,2,3,4,5',)),)),)),
    Table('one-ablation', "ONE paper's component study (secondary source): ONE without online "
                          'distillation, without sharing layers, without the gate, beside the '
                          'baseline and full ONE, ResNet-110 on CIFAR-100', 'cifar100',
          (Row('resnet-110', RESNET_110, (
              Part((BASELINE, ONE)),
              Part((ONE,), ('--no-distill',), name='no-distill'),
              Part((ONE,), ('--branch-point', 'stage1'), name='no-sharing'),
              Part((ONE,), ('--gate', 'average'), name='no-gate'))),)),
    Table('peers-cifar100', 'The peer methods on ResNet-32, CIFAR-100, each with its paper\'s '
                            'settings: DML, CL-ILR, OKDDip (its paper\'s logit mix and ours), '
                            'beside the baseline and ONE', 'cifar100',
          (Row('resnet-32', RESNET_32,
               (Part(PEERS, vary=('aggregate=probabilities,logits',)),)),)),
    Table('peers-cifar10', 'The peer methods on ResNet-32, CIFAR-10, each with its paper\'s '
                           'settings: DML, CL-ILR, OKDDip, beside the baseline and ONE',
          'cifar10', (Row('resnet-32', RESNET_32, (Part(PEERS),)),)),
)}

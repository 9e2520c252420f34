"""What the engine needs to know of a training method, and nothing more.

A method is one file in methods/ and one entry in methods/__init__.py's registry. Its class is
the method's one declaration: its flags with its paper's defaults (add_flags; every default is
written there and nowhere else: defaults() reads them back), the checks of their values, the
flags that make a different model or objective (variant), its model, its objective, the
accuracy columns it reports and how tables label them. The engine (utils/engine.py) trains,
evaluates, checkpoints and logs any method through this interface alone, and report.py takes
its names and labels from here.

Models return plain logits (batch, classes) or a models.output.ModelOutput (members,
ensemble, named extras); a method's accuracy columns name the parts of that output, so the
engine never looks inside it.
"""
import argparse

from models import NETWORKS, branch_state_dict
from models.cohort import ENSEMBLES, Cohort
from models.output import column_hits
from models.resnet import DEPTH_RULES
from utils.cli import build_parser, parse_flags
from utils.errors import UserError
from utils.steps import train_step
from .networks import (COMPUTATION_ONLY, add_network_flags, backbone_of, build_plain,
                       network_identity, resolve_network_flags)

# How tables name the shared flags a run may vary (a method names its own in flag_labels).
SHARED_FLAG_LABELS = {'weight_decay': 'wd', 'train_batch': 'batch'}

def describe_value(value):
    if isinstance(value, float):
        return f'{value:g}'
    if isinstance(value, (list, tuple)):
        return ','.join(describe_value(v) for v in value)
    return str(value)


def describe_flag(key, value, labels):
    """'T=4', 'no distill', 'rescaling', 'no rescaling' ..."""
    name = labels.get(key, key)
    if value is True:
        return name.replace('_', ' ')
    if value is False:
        return 'no ' + name.replace('_', ' ')
    return f'{name}={describe_value(value)}'


class Method:
    name = ''            # recorded in args.json and in every checkpoint
    title = ''           # how tables and logs name it
    usage = ''           # its entry script's --help text: what it trains, an example, defaults
    arch = 'resnet'      # the default -a/--arch
    member, members, ensemble_label = 'network', 'networks', 'ensemble'  # for printed labels
    count_key = None     # the flag counting its members ('num_branches', 'num_nets'), which
    #                      is part of its identity
    renamed = {}         # {key: the name records (args.json, checkpoints) once gave it}
    flag_labels = {}     # short names report.py gives its variant flags, e.g. {'temperature': 'T'}
    # The identity of checkpoints written before a key was recorded: built with these values.
    identity_assumed = {'depth_rule': DEPTH_RULES[0]}
    train_step = staticmethod(train_step)  # one optimizer step; DML's alternating order replaces it
    # Its flags that change how it computes, not what it trains (utils/cli.BOOKKEEPING's kind).
    bookkeeping = frozenset(COMPUTATION_ONLY)

    @property
    def archs(self):
        """The -a values it trains: its default arch first, then every other network of the
        registry (models/registry.py: the CIFAR networks, then torchvision's)."""
        return (self.arch, *(n for n in NETWORKS if n != backbone_of(self.arch)))

    def upgrade(self, record):
        """A checkpoint's or args.json's dict with the keys it recorded under an older name
        (self.renamed) under today's: old runs resume, evaluate, export and report as new."""
        old = {was: key for key, was in self.renamed.items() if key not in record and was in record}
        return {old.get(key, key): value for key, value in record.items()} if old else record

    def upgrade_checkpoint(self, state):
        """upgrade() of a checkpoint and of the args it records."""
        state = self.upgrade(state)
        if isinstance(state.get('args'), dict):
            state = {**state, 'args': self.upgrade(state['args'])}
        return state

    def add_network_flags(self, parser):
        """-a, --depth and the networks' flags (methods/networks.py)."""
        add_network_flags(parser, self.archs)

    def add_flags(self, parser):
        """The method's own flags, and parser.set_defaults for its paper's settings."""

    def defaults(self, **flags):
        """The flags a run of this method gets from an empty command line, with `flags` set
        on top: what tests, the benchmark and the report use instead of copies."""
        dataset = ['--dataset', flags['dataset']] if 'dataset' in flags else []
        args = parse_flags(build_parser('', self), dataset)
        args.method = self.name
        for key, value in flags.items():
            setattr(args, key, value)
        self.resolve(args)
        return args

    def resolve(self, args):
        """Fill the flags whose default depends on the network (--depth, its width flags);
        UserError for a network flag that cannot work."""
        resolve_network_flags(args)

    def validate(self, args):
        """Refuse, in one UserError naming the flag, a network or method flag that cannot work."""
        self.resolve(args)
        self.check_flags(args)

    def check_flags(self, args):
        """Raise UserError for a bad value of one of the method's flags."""

    def variant(self, args):
        """The flags that make a different model or objective, under the names checkpoints
        record them by (checked on resume and evaluation)."""
        return {}

    def identity(self, args):
        """What a checkpoint records of this method's model and objective beyond the network
        and data: the member count (for methods of several) and the variant."""
        count = {self.count_key: getattr(args, self.count_key)} if self.count_key else {}
        return {**count, **network_identity(args), **self.variant(args)}

    def member_count(self, record):
        """How many members a checkpoint's (upgraded) model has."""
        return record[self.count_key] if self.count_key else 1

    def build_model(self, args, num_classes):
        raise NotImplementedError

    def packable(self, args):
        """Why runs of these flags cannot train as a pack (--seeds; utils/pack.py), or None.
        A pack takes one backward pass over the runs' summed losses: a method with its own
        training step cannot be packed unless it says how."""
        if self.train_step is not train_step:
            return f'{self.title} trains with its own step, which a pack cannot batch'
        return None

    def views(self, args):
        """How many differently augmented copies of each training batch the model takes
        (its training images then have shape (views, B, C, H, W)); 1 but for KDCL's input
        distortion."""
        return 1

    def objective(self, args):
        """A callable (output, targets, epoch, batch_size=None) -> loss, with .rampup(epoch),
        built from the flags alone (objectives have no defaults of their own).
        The loss may depend on the epoch only through rampup(epoch), and the callable also
        takes `weight=`: that value as a 0-dim tensor, to use in its place (a CUDA graph's
        input, which one recorded step reads afresh every epoch; utils/graphs.py); an
        objective whose loss does not depend on the epoch ignores it."""
        raise NotImplementedError

    def columns(self, args):
        """Names of the accuracy columns, each a part of the model's output
        (models.output.column_logits): '1'..'m' a member, 'ens' the ensemble, another name an
        extra (KD's 'teacher'). The first is the network the method deploys (model_best
        follows it)."""
        return ['1']

    def describe_flags(self, flags):
        """The flags a run varies ([(key, value)]) as report.py labels them."""
        labels = {**SHARED_FLAG_LABELS, **self.flag_labels}
        return [describe_flag(key, value, labels) for key, value in flags]

    def label(self, column):
        """How printed tables name an accuracy column."""
        if column == 'ens':
            return self.ensemble_label
        return f'{self.member} {column}' if column.isdigit() else column

    def correct(self, output, targets, columns):
        """Top-1 and top-5 hits per column, shape (2, len(columns)). A method changes what
        it counts by its columns and its model's output, not here."""
        return column_hits(output, targets, columns)

    def deployable(self, state, member):
        """The plain network's state dict of one member (1-based) of a checkpoint's model."""
        raise NotImplementedError(f'{self.title} has nothing to export as a plain network')

    def deployed_keywords(self, state, member):
        """The network keywords under which that plain network differs from the checkpoint's
        own (only the OKDDip code DenseNet's leader does: final_norm=False)."""
        return {}


def member_columns_and_ensemble(count):
    return [str(i) for i in range(1, count + 1)] + ['ens']


def check_member(member, count, what):
    if not 1 <= member <= count:
        raise UserError(f'--branch must be 1..{count} ({what}), got {member}')


class BranchedMethod(Method):
    """A method on a shared trunk with m branches (ONE, CL-ILR, OKDDip): columns 1..m and the
    ensemble; branch K with the trunk is a plain network."""
    member, members = 'branch', 'branches'
    count_key = 'num_branches'
    min_branches, why_min_branches = 1, ''

    def resolve(self, args):
        resolve_network_flags(args, branched=True)

    def validate(self, args):
        if args.num_branches < self.min_branches:
            raise UserError(f'--num-branches must be at least {self.min_branches}'
                            f'{self.why_min_branches}, got {args.num_branches}')
        super().validate(args)

    def columns(self, args):
        return member_columns_and_ensemble(args.num_branches)

    def deployable(self, state, member):
        check_member(member, state['num_branches'], 'the branch')
        return branch_state_dict(state['state_dict'], member - 1)

    def own_layout(self, args):
        """Whether -a names the method's own ResNet layout (one_resnet, ...), rather than a
        backbone that models/branched.py splits into branches."""
        return args.arch == self.arch


def num_nets(text):
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f'needs at least 2 networks, got {value}')
    return value


class CohortMethod(Method):
    """A method of m independent networks trained side by side (DML, KDCL): --num-nets M,
    columns 1..m and their ensemble (`ensemble`, a rule of models/cohort.py's ENSEMBLES);
    network K is a plain network."""
    member, members = 'network', 'networks'
    count_key = 'num_nets'
    renamed = {'num_nets': 'num_branches'}   # DML's runs before 2026-12 recorded num_branches
    ensemble = 'mean_probability'

    def add_flags(self, parser):
        parser.add_argument('--num-nets', '--num-branches', type=num_nets, metavar='M',
                            default=2, help='m, the number of networks')

    def build_model(self, args, num_classes):
        return Cohort(lambda: build_plain(args, num_classes), args.num_nets,
                      ENSEMBLES[self.ensemble])

    def columns(self, args):
        return member_columns_and_ensemble(args.num_nets)

    def deployable(self, state, member):
        check_member(member, state['num_nets'], 'the network')
        prefix = f'nets.{member - 1}.'
        return {key[len(prefix):]: value for key, value in state['state_dict'].items()
                if key.startswith(prefix)}


def require(condition, flag, value, allowed):
    """Refuse a flag's value in one line unless `condition` (write it so that NaN fails)."""
    if not condition:
        raise UserError(f'{flag} must be {allowed}, got {value}')


def check_temperature(args):
    require(args.temperature > 0, '--temperature', args.temperature, '> 0')


def check_rampup(args):
    require(args.consistency_rampup >= 0, '--consistency_rampup', args.consistency_rampup,
            '>= 0 epochs')

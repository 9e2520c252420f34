"""Every method over every other backbone (-a resnext, densenet, wrn, vgg), at tiny widths,
through its entry script: trains, resumes bitwise, evaluates with -e, and its member 1 exports
as the plain network that cifar_baseline.py evaluates to the same accuracy. Plus the network
flags: defaults from the constructors, refusals in one line. The ResNet (every method's
default -a) is covered by tests/test_methods_cli.py, the backbones themselves by
tests/test_backbones.py."""
import inspect

import pytest
import torch

import cifar_baseline
import cifar_kd
import cifar_one
import export_branch
from conftest import TINY, assert_same_run, entry, flags_of, load
from fakedata import write_fashion_mnist
from methods import METHODS
from methods.published import lookup
from methods.networks import NETWORK_FLAGS, build_plain, keywords
from models import CIFAR_NETWORKS, NETWORKS
from reports.runs import variant_flags

NAMES = list(METHODS)
# The registry's smallest form of every CIFAR network but the ResNet (WRN's with dropout, so
# that a resume must restore the RNG that dropout draws from).
TINY_NETWORKS = {name: flags_of(NETWORKS[name].tiny) for name in CIFAR_NETWORKS
                 if name != 'resnet'}
# Networks of fixed width (VGG's 64-512 channels, ResNeXt's 256-1024) make every image cost:
# epochs of one step of 16 images, 40 test images.
ONE_STEP_EPOCHS = ['--train-subset', 16, '--train-batch', 16, '--test-batch', 20]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('small')
    write_fashion_mnist(str(root), num_train=64, num_test=40)
    return str(root)


def tiny(data_root, folder, *extra):
    return [*TINY, '--data-dir', data_root, '-c', str(folder),
            *map(str, [*ONE_STEP_EPOCHS, *extra])]


def flags(name, arch, teacher, *extra):
    return [*(['--teacher', teacher] if name == 'kd' else []), '-a', arch, *TINY_NETWORKS[arch],
            *extra]


def accuracy_printed(out, label):
    line = next(l for l in out.splitlines() if l.strip().startswith(label))
    return float(line.split()[-1])


@pytest.mark.parametrize('arch', TINY_NETWORKS)
@pytest.mark.parametrize('name', NAMES)
def test_every_method_over_every_backbone(name, arch, data, teacher, tmp_path, capsys):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert entry(name).main(tiny(data, straight, *flags(name, arch, teacher,
                                                                 '--epochs', 2))) == 0
    assert entry(name).main(tiny(data, split, *flags(name, arch, teacher,
                                                              '--epochs', 1))) == 0
    assert entry(name).main(tiny(data, split, *flags(name, arch, teacher, '--epochs', 2,
                                                              '--resume', 'auto'))) == 0
    checkpoint = straight / 'checkpoint.pth.tar'
    assert_same_run(checkpoint, split / 'checkpoint.pth.tar')
    state = load(checkpoint)
    assert (state['arch'], state['depth']) == (arch, NETWORKS[arch].tiny['depth'])
    member_1 = state['history'][-1]['test_acc_1']

    capsys.readouterr()
    assert entry(name).main(tiny(data, tmp_path / 'unused', *flags(
        name, arch, teacher, '-e', '--resume', checkpoint))) == 0
    assert accuracy_printed(capsys.readouterr().out, METHODS[name].label('1')) == member_1

    exported = tmp_path / 'member1.pth.tar'
    capsys.readouterr()
    assert export_branch.main([str(checkpoint), '-o', str(exported)]) == 0
    assert load(exported)['arch'] == arch
    # the command export_branch.py prints (the OKDDip code DenseNet's leader: --no-final-norm)
    command = capsys.readouterr().out.split('evaluate it with: ')[1].split()
    assert command[:2] == ['python', 'cifar_baseline.py']
    assert cifar_baseline.main(tiny(data, tmp_path / 'unused', *command[2:])) == 0
    assert accuracy_printed(capsys.readouterr().out, 'network 1') == pytest.approx(member_1,
                                                                                  abs=0.005)
    assert not (tmp_path / 'unused').exists()


def test_the_network_flags_are_the_constructors_keywords():
    """A keyword added to a backbone gets its flag (and a flag no backbone takes is caught)."""
    taken = {key for backbone in CIFAR_NETWORKS for key in keywords(backbone)}
    assert taken == set(NETWORK_FLAGS)
    for backbone in CIFAR_NETWORKS:
        parameters = inspect.signature(NETWORKS[backbone].build).parameters
        assert list(parameters)[:1] == ['depth'], backbone


@pytest.mark.parametrize('arch, depth, network, millions', [
    ('resnext', 29, {'cardinality': 8, 'base_width': 64}, 34.4),
    ('densenet', 190, {'growth_rate': 40, 'bottleneck': True, 'compression': None}, 25.6),
    ('wrn', 28, {'widen_factor': 10, 'drop': 0.0}, 36.5),
    ('vgg', 16, {}, None),
])
def test_unset_flags_give_the_papers_network(arch, depth, network, millions):
    args = METHODS['baseline'].defaults(arch=arch)
    assert args.depth == depth
    assert METHODS['baseline'].identity(args) == network
    if millions:
        count = sum(p.numel() for p in build_plain(args, 10, meta=True).parameters())
        assert round(count / 1e6, 1) == millions


def test_non_bc_densenet_by_a_flag(data, tmp_path):
    """--no-bottleneck: the original DenseNet, whose transitions keep every channel."""
    args = METHODS['baseline'].defaults(arch='densenet', depth=40, growth_rate=12,
                                        bottleneck=False)
    count = sum(p.numel() for p in build_plain(args, 10, meta=True).parameters())
    assert count == 1_019_722   # DenseNet-40-12, 1.0M (tests/test_backbones.py)


def test_one_over_vgg_branches_at_its_last_stage_by_default():
    args = METHODS['one'].defaults(arch='vgg', depth=11)
    assert args.branch_point == 'stage5'
    model = METHODS['one'].build_model(args, 10)
    assert model.shared_stages == ('stage1', 'stage2', 'stage3', 'stage4')


def test_kd_distils_from_a_member_of_another_backbone(data, teacher, tmp_path):
    """A teacher that is ONE over a WRN, branch 2: rebuilt as the plain WRN it exports as."""
    one = tmp_path / 'one'
    assert cifar_one.main(tiny(data, one, *flags('one', 'wrn', None, '--epochs', 1))) == 0
    student = tmp_path / 'student'
    assert cifar_kd.main(tiny(data, student, '--epochs', 1, '-a', 'vgg',
                              '--depth', 11, '--teacher', one / 'checkpoint.pth.tar',
                              '--teacher-member', 2)) == 0
    state = load(student / 'checkpoint.pth.tar')
    trained = load(one / 'checkpoint.pth.tar')['state_dict']
    assert torch.equal(state['state_dict']['teacher.fc.weight'],
                       trained['branches.1.fc.weight'])
    assert (state['teacher_arch'], state['arch']) == ('wrn', 'vgg')


@pytest.mark.parametrize('script, argv, named', [
    (cifar_baseline, ['-a', 'mobilenet'], "argument -a/--arch: invalid choice: 'mobilenet'"),
    (cifar_baseline, ['-a', 'resnext', '--depth', 12], '--depth: depth must be 9n+2'),
    (cifar_baseline, ['-a', 'densenet', '--depth', 12], '--depth: depth must be 6n+4'),
    (cifar_baseline, ['-a', 'vgg', '--depth', 12], '--depth: depth must be one of 11, 13'),
    (cifar_baseline, ['--growth-rate', 12], '--growth-rate: ResNet (-a resnet) has no such'),
    (cifar_baseline, ['-a', 'wrn', '--cardinality', 4], '--cardinality: WRN (-a wrn) has no'),
    (cifar_baseline, ['--drop', 0.3], '--drop: ResNet (-a resnet) has no such setting; it is '
                                      'a flag of -a wrn'),
    (cifar_baseline, ['-a', 'wrn', '--depth', 10, '--drop', 1], '--drop: drop must be in [0, 1)'),
    (cifar_baseline, ['-a', 'resnext', '--depth', 11, '--cardinality', 0],
     '--cardinality: cardinality must be an integer >= 1'),
    (cifar_one, ['-a', 'resnext', '--depth', 11, '--branch-point', 'stage4'],
     '--branch-point must be one of stage1, stage2, stage3 for -a resnext'),
    (cifar_one, ['-a', 'resnet'], "invalid choice: 'resnet' (choose from 'one_resnet'"),
])
def test_bad_network_flags_are_one_line_and_write_nothing(script, argv, named, data,
                                                         tmp_path, capsys):
    run = tmp_path / 'r'
    try:
        code = script.main(tiny(data, run, *argv))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and named in err[0], err
    assert not run.exists()


def test_a_checkpoint_of_another_backbone_is_refused(data, tmp_path, capsys):
    run = tmp_path / 'wrn'
    assert cifar_baseline.main(tiny(data, run, *flags('baseline', 'wrn', None,
                                                               '--epochs', 1))) == 0
    capsys.readouterr()
    for other in (['-a', 'wrn', '--depth', 10, '--widen-factor', 2],
                  ['-a', 'densenet', '--depth', 10]):
        assert cifar_baseline.main(tiny(data, tmp_path / 'x', *other, '-e', '--resume',
                                        run / 'checkpoint.pth.tar')) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and 'mismatch: ' in err[0], err
    assert 'mismatch: arch' in err[0]


@pytest.mark.parametrize('method, arch, depth, dataset, error', [
    ('one', 'resnext', 29, 'cifar10', 3.45), ('baseline', 'densenet', 190, 'cifar100', 17.53)])
def test_a_papers_network_run_meets_its_published_number(method, arch, depth, dataset, error):
    """A run with the network's default flags has no variant flags, so report.py compares it
    with the ONE table's entry (recalled, marked unverified: docs/FIDELITY.md)."""
    args = {**vars(METHODS[method].defaults(arch=arch)), 'dataset': dataset}
    assert variant_flags(method, args) == ((), ())
    entry = lookup(method, (), arch, depth, dataset, '1')[0]
    assert (entry.error, entry.secondary) == (error, True) and 'NOT checked' in entry.source
    assert variant_flags(method, {**args, 'cardinality': 16, 'growth_rate': 12}) != ((), ())


def test_memory_efficient_densenet_is_not_part_of_the_runs_identity(data, tmp_path):
    """--memory-efficient only changes how a DenseNet computes: a run may continue with it
    switched, and its checkpoints do not record it."""
    run = tmp_path / 'r'
    assert cifar_baseline.main(tiny(data, run, *flags('baseline', 'densenet', None,
                                                       '--epochs', 1))) == 0
    assert cifar_baseline.main(tiny(data, run, *flags('baseline', 'densenet', None, '--epochs', 2,
                                                       '--memory-efficient', '--resume',
                                                       'auto'))) == 0
    state = load(run / 'checkpoint.pth.tar')
    assert state['epoch'] == 2 and 'memory_efficient' not in state
    assert state['args']['memory_efficient'] is True

"""KD (methods/kd.py): the objective against a direct computation, the frozen teacher, teacher
checkpoints of every kind and its own refusals (training, resume, -e and export through the
command line: tests/test_methods_cli.py)."""
import json
import math
import os

import pytest
import torch

import cifar_baseline
import cifar_kd
import cifar_one
import export_branch
from conftest import load, objective, run_script, tiny
from methods import METHODS
from methods.kd import KDLoss
from models import branch_state_dict, one_resnet, resnet
from models.output import ModelOutput
from utils.setup import build_optimizer

pytestmark = pytest.mark.usefixtures('one_thread')

# Fixed logits (members, batch, classes) and labels; values checked by hand-written loops below.
LOGITS = torch.tensor([[[2.0, -1.0, 0.5, 0.0], [0.3, 1.2, -0.7, 2.2], [-1.5, 0.4, 1.1, 0.2]],
                       [[1.0, 0.5, -0.5, 1.5], [-0.2, 2.0, 0.1, 0.0], [0.8, -1.0, 2.4, -0.3]]],
                      dtype=torch.float64)
LABELS = torch.tensor([0, 3, 2])
# What the StudentTeacher model returns for them: the student is member 1, the teacher an extra.
KD_OUTPUT = ModelOutput(LOGITS[:1], extras={'teacher': LOGITS[1]})
SUBSET = ['--train-subset', 256]
# Subprocesses on one thread too: several threads per process only thrash a busy 2-core machine.
ONE_THREAD = {**os.environ, 'OMP_NUM_THREADS': '1'}


def direct_kd(student, teacher, labels, T, alpha):
    """Hinton et al.: (1 - alpha) CE + alpha T^2 KL(p_t || p_s), written out sample by sample."""
    total = 0.0
    for z_s, z_t, y in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        ce = -(z_s[y] - math.log(sum(math.exp(v) for v in z_s)))
        norm_t = sum(math.exp(v / T) for v in z_t)
        norm_s = sum(math.exp(v / T) for v in z_s)
        log_p_t = [t / T - math.log(norm_t) for t in z_t]
        log_p_s = [s / T - math.log(norm_s) for s in z_s]
        kl = sum(math.exp(lt) * (lt - ls) for lt, ls in zip(log_p_t, log_p_s))
        total += (1 - alpha) * ce + alpha * T * T * kl
    return total / len(labels)


@pytest.mark.parametrize('T, alpha, pinned', [
    (4.0, 0.9, 0.7965861457874328),   # the defaults
    (1.0, 0.5, 0.5548518602222571),
    (2.0, 0.0, 0.49226510418161484),  # labels only
    (3.0, 1.0, 0.8124177760816015),   # teacher only
])
def test_kd_loss_value(T, alpha, pinned):
    loss = KDLoss(temperature=T, alpha=alpha)(KD_OUTPUT, LABELS, epoch=0)
    expected = direct_kd(LOGITS[0], LOGITS[1], LABELS, T, alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(pinned, rel=1e-12)
    assert KDLoss(temperature=T, alpha=alpha).rampup(7) == alpha


def test_kd_defaults_and_batch_size():
    loss = objective('kd')
    assert (loss.temperature, loss.alpha) == (4.0, 0.9)
    # a rank of a distributed run divides its sum by the global batch
    torch.testing.assert_close(loss(KD_OUTPUT, LABELS, 0, batch_size=6),
                               loss(KD_OUTPUT, LABELS, 0) / 2)


# ----------------------------------------------------------------------------- teachers

@pytest.fixture(scope='module')
def teachers(fashion_root, tmp_path_factory):
    """One-epoch baseline and ONE (m = 3) checkpoints to distil from."""
    root = tmp_path_factory.mktemp('teachers')
    assert cifar_baseline.main(tiny(fashion_root, root / 'baseline', '--epochs', 1, *SUBSET)) == 0
    assert cifar_one.main(tiny(fashion_root, root / 'one', '--epochs', 1, *SUBSET)) == 0
    return {'baseline': root / 'baseline' / 'checkpoint.pth.tar',
            'one': root / 'one' / 'checkpoint.pth.tar'}


def kd_args(teacher, member=None):
    args = METHODS['kd'].defaults(depth=8, dataset='fashionmnist', teacher=str(teacher),
                                  teacher_member=member)
    METHODS['kd'].check_flags(args)
    return args


def test_teacher_is_frozen_and_stays_in_eval_mode(teachers):
    args = kd_args(teachers['one'], '2')
    model = METHODS['kd'].build_model(args, 10)
    teacher_state = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    model.train()
    assert model.student.training
    assert not any(m.training for m in model.teacher.modules())
    images = torch.randn(8, 3, 32, 32)
    output = model(images)
    objective('kd')(output, torch.arange(8) % 10, 0).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.student.parameters())
    # eval-mode BatchNorm: running statistics untouched, output as in eval mode
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key]), key
    model.eval()
    torch.testing.assert_close(output.extras['teacher'], model(images).extras['teacher'],
                               rtol=0, atol=0)
    # the engine's optimizer gets the student's parameters only
    optimizer = build_optimizer(args, model, torch.device('cpu'))
    assert sum(p.numel() for g in optimizer.param_groups for p in g['params']) == \
        sum(p.numel() for p in model.student.parameters())


def test_student_starts_from_the_baseline_initial_weights(teachers):
    args = kd_args(teachers['baseline'])
    torch.manual_seed(3)
    student = METHODS['kd'].build_model(args, 10).student.state_dict()
    torch.manual_seed(3)
    baseline = resnet(8, 10).state_dict()
    assert all(torch.equal(student[k], baseline[k]) for k in baseline)


@pytest.mark.parametrize('member, expected', [(None, 'ens'), ('ens', 'ens'), ('2', 'branch 2')])
def test_one_teacher_member_is_the_ensemble_or_a_branch(teachers, member, expected):
    args = kd_args(teachers['one'], member)
    assert args.teacher_member == ('2' if expected == 'branch 2' else 'ens')
    assert (args.teacher_method, args.teacher_arch, args.teacher_depth) == ('one', 'one_resnet', 8)
    state = load(teachers['one'])
    one = one_resnet(8, 10)
    one.load_state_dict(state['state_dict'])
    one.eval()
    model = METHODS['kd'].build_model(args, 10).eval()
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        logits, ensemble, _ = one(images)
        teacher = model(images).extras['teacher']
    torch.testing.assert_close(teacher, ensemble if expected == 'ens' else logits[1])


@pytest.mark.parametrize('teacher, flags, message', [
    ('baseline', ['--teacher-member', 'ens'], '--teacher-member ens:'),
    ('one', ['--teacher-member', '4'], '--teacher-member must be ens or 1..3'),
    ('one', ['--alpha', '1.5'], '--alpha must be in [0, 1], got 1.5'),
    ('one', ['--temperature', '0'], '--temperature must be > 0'),
    (None, [], '--teacher PATH is required'),
])
def test_bad_teacher_flags(teachers, teacher, flags, message, fashion_root, tmp_path, capsys):
    argv = tiny(fashion_root, tmp_path / 'run', '--epochs', 1) + flags
    if teacher:
        argv += ['--teacher', str(teachers[teacher])]
    try:
        code = cifar_kd.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / 'run').exists()


def test_teacher_of_another_dataset_is_refused(teachers, fashion_root, tmp_path):
    state = load(teachers['baseline'])
    state['dataset'] = 'cifar10'
    torch.save(state, tmp_path / 'cifar10_teacher.pth.tar')
    proc = run_script('cifar_kd.py', *tiny(fashion_root, tmp_path / 'run', '--epochs', 1),
                      '--teacher', tmp_path / 'cifar10_teacher.pth.tar', check=False,
                      env=ONE_THREAD)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert 'was trained on cifar10, but this run is on fashionmnist' in line
    assert not (tmp_path / 'run').exists()


# ----------------------------------------------------------------------------- runs

def assert_teacher_untouched(run, teacher_path, prefix, teacher_state):
    """The student's checkpoint holds the teacher's exact weights and BatchNorm statistics."""
    state = load(run / 'checkpoint.pth.tar')['state_dict']
    stored = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    assert stored.keys() == teacher_state.keys()
    assert all(torch.equal(stored[k], teacher_state[k]) for k in teacher_state)


def test_defaults_and_the_teacher_recorded(teachers, fashion_root, tmp_path):
    args = METHODS['kd'].defaults()
    assert (args.temperature, args.alpha, args.weight_decay, args.schedule) == (
        4.0, 0.9, 1e-4, [151, 225])
    run = tmp_path / 'run'
    assert cifar_kd.main(tiny(fashion_root, run, '--epochs', 1, *SUBSET,
                              '--teacher', teachers['baseline'])) == 0
    recorded = json.loads((run / 'args.json').read_text())
    assert (recorded['teacher'], recorded['teacher_member'], recorded['teacher_method']) == (
        str(teachers['baseline']), '1', 'baseline')
    assert load(run / 'checkpoint.pth.tar')['teacher_epoch'] == 1
    assert_teacher_untouched(run, teachers['baseline'], 'teacher.',
                             load(teachers['baseline'])['state_dict'])


@pytest.fixture(scope='module')
def ensemble_run(teachers, fashion_root, tmp_path_factory):
    """Two epochs distilled from the ONE teacher's ensemble (the default member)."""
    run = tmp_path_factory.mktemp('kd') / 'straight'
    assert cifar_kd.main(tiny(fashion_root, run, '--epochs', 2, *SUBSET,
                              '--teacher', teachers['one'])) == 0
    return run


def test_ensemble_and_branch_teachers_of_one(ensemble_run, teachers, fashion_root, tmp_path):
    one_state = load(teachers['one'])['state_dict']
    assert load(ensemble_run / 'checkpoint.pth.tar')['teacher_member'] == 'ens'
    assert_teacher_untouched(ensemble_run, teachers['one'], 'teacher.model.', one_state)
    run = tmp_path / 'branch'
    assert cifar_kd.main(tiny(fashion_root, run, '--epochs', 2, *SUBSET, '--teacher',
                              teachers['one'], '--teacher-member', 2)) == 0
    assert_teacher_untouched(run, teachers['one'], 'teacher.', branch_state_dict(one_state, 1))
    history = load(run / 'checkpoint.pth.tar')['history']
    assert [row['epoch'] for row in history] == [1, 2]
    # the frozen teacher's test accuracy cannot change from epoch to epoch
    assert history[0]['test_acc_teacher'] == history[1]['test_acc_teacher']


def test_another_teacher_member_is_another_run(ensemble_run, teachers, fashion_root, tmp_path,
                                                capsys):
    flags = [*SUBSET, '--teacher', teachers['one'], '--teacher-member', 1]
    assert cifar_kd.main(tiny(fashion_root, tmp_path / 'u', '-e', *flags, '--resume',
                              ensemble_run / 'checkpoint.pth.tar')) == 2
    assert 'mismatch: teacher_member' in capsys.readouterr().err


def test_export_gives_the_student_as_a_plain_resnet(ensemble_run, fashion_root, tmp_path, capsys):
    out = tmp_path / 'student.pth.tar'
    checkpoint = ensemble_run / 'checkpoint.pth.tar'
    assert export_branch.main([str(checkpoint), '-o', str(out)]) == 0
    exported, state = load(out), load(checkpoint)
    assert (exported['method'], exported['arch'], exported['depth']) == ('baseline', 'resnet', 8)
    student = {k[len('student.'):]: v for k, v in state['state_dict'].items()
               if k.startswith('student.')}
    assert exported['state_dict'].keys() == resnet(8, 10).state_dict().keys()
    assert all(torch.equal(exported['state_dict'][k], student[k]) for k in student)
    assert export_branch.main([str(checkpoint), '--branch', '2', '-o', str(tmp_path / 'b2')]) == 2

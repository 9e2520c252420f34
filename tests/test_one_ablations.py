"""ONE's ablations (paper, Table 5) as flags of cifar_one.py: --no-distill, --gate average,
--branch-point stage1, each a different model or objective that a checkpoint records."""
import pytest
import torch

import cifar_baseline
import cifar_one
import export_branch
from conftest import load, objective, run_script, tiny
from models import branch_state_dict, one_resnet, resnet
from models.output import ModelOutput
from test_losses import ce, one_reference, random_output
from test_models import num_params, perturb_batchnorm


@pytest.mark.parametrize('epoch', [0, 80, 200])
def test_no_distill_drops_only_the_kl_term(epoch):
    logits, ensemble, targets = random_output(seed=11)
    loss = objective('one', no_distill=True)(ModelOutput(logits, ensemble), targets, epoch)
    expected = sum(ce(z, targets) for z in logits) + ce(ensemble, targets)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)
    with_kl = objective('one')(ModelOutput(logits, ensemble), targets, epoch)
    torch.testing.assert_close(with_kl, one_reference(logits, ensemble, targets, epoch, 3.0, 80))
    assert with_kl - loss > 1e-3  # the dropped term was not negligible
    assert objective('one', no_distill=True).rampup(epoch) == 0.0


def test_average_gate_is_the_plain_mean_and_has_no_parameters():
    torch.manual_seed(0)
    model = one_resnet(8, 6, num_branches=4, gate='average').eval()
    assert model.gate is None
    assert num_params(model) == num_params(one_resnet(8, 6, 4)) - (32 * 4 + 4) - 2 * 4  # Linear(32, 4), BN1d(4)
    with torch.no_grad():
        logits, ensemble, _ = model(torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(ensemble, logits.mean(0), rtol=0, atol=0)


@pytest.mark.parametrize('branch_point, shared', [('stage1', []), ('stage2', ['layer1']),
                                                  ('stage3', ['layer1', 'layer2'])])
@pytest.mark.parametrize('depth', [8, 44])
def test_branch_point_decides_what_is_shared(branch_point, shared, depth):
    """Trunk + branch K is exactly a plain resnet at every branch point: same parameter
    count, and the exported weights compute branch K's logits."""
    g = torch.Generator().manual_seed(depth)
    torch.manual_seed(1)
    model = one_resnet(depth, 10, num_branches=3, branch_point=branch_point)
    perturb_batchnorm(model, g)
    model.eval()
    assert [n for n in ('layer1', 'layer2', 'layer3') if hasattr(model, n)] == shared
    branch_params = num_params(model.branches[0])
    assert num_params(model) - num_params(model.gate) - 2 * branch_params == num_params(resnet(depth, 10))
    plain = resnet(depth, 10).eval()
    plain.load_state_dict(branch_state_dict(model.state_dict(), 2))
    x = torch.randn(4, 3, 32, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x).members[2], rtol=1e-5, atol=1e-5)


def test_sharing_less_costs_parameters():
    sizes = [num_params(one_resnet(32, 100, 3, bp)) for bp in ('stage3', 'stage2', 'stage1')]
    assert sizes[0] == 1_193_189 and sizes[0] < sizes[1] < sizes[2]


def test_ablation_flags_train_evaluate_and_export(fashion_root, tmp_path, capsys):
    run = tmp_path / 'r'
    flags = ['--no-distill', '--gate', 'average', '--branch-point', 'stage1', '--epochs', 2,
             '--train-subset', 256]
    assert cifar_one.main(tiny(fashion_root, run, *flags)) == 0
    state = load(run / 'checkpoint.pth.tar')
    assert (state['distill'], state['gate'], state['branch_point']) == (False, 'average', 'stage1')
    assert [row['rampup'] for row in state['history']] == [0.0, 0.0]
    assert not any(k.startswith('gate.') or k.startswith('layer1.') for k in state['state_dict'])

    out = tmp_path / 'b2.pth.tar'
    assert export_branch.main([str(run / 'checkpoint.pth.tar'), '--branch', '2', '-o', str(out)]) == 0
    capsys.readouterr()
    assert cifar_baseline.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume', out)) == 0
    exported_acc = float(capsys.readouterr().out.splitlines()[-1].split()[-1])
    assert exported_acc == pytest.approx(state['history'][-1]['test_acc_2'], abs=0.005)


VARIANT = ['--gate', 'average', '--branch-point', 'stage1', '--no-distill']


@pytest.mark.parametrize('resume_flags, mismatch', [
    (['--branch-point', 'stage1', '--no-distill'], 'gate'),
    (['--gate', 'average', '--no-distill'], 'branch_point'),
    (['--gate', 'average', '--branch-point', 'stage1'], 'distill'),
])
def test_a_checkpoint_of_another_variant_is_refused(fashion_root, tmp_path, resume_flags, mismatch):
    run = tmp_path / 'r'
    assert cifar_one.main(tiny(fashion_root, run, *VARIANT, '--epochs', 1, '--train-subset', 128)) == 0
    before = (run / 'checkpoint.pth.tar').read_bytes()
    proc = run_script('cifar_one.py', *tiny(fashion_root, run, '--epochs', 2, '--resume', 'auto',
                                            '--train-subset', 128, *resume_flags), check=False)
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f'mismatch: {mismatch}' in proc.stderr
    assert (run / 'checkpoint.pth.tar').read_bytes() == before

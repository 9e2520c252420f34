"""Packed runs (--seeds; utils/pack.py): k runs that differ only by seed trained as one stacked
model. Each run of a pack equals the run its seed trains alone: the same batches bitwise, the
same mathematics (equal in float64; in float32 within rounding), and an ordinary run folder
that -e, export, report.py and --resume treat as a run trained alone."""
import copy
import csv
import json
import os

import pytest
import torch

import cifar_one
import export_branch
import report
from conftest import assert_same_run, entry, load, needs_teacher, tiny, without_seed
from test_cuda import FP32, assert_close_tensors
from methods import METHODS
from utils.data import DeviceLoader
from utils.pack import (Pack, PackLoader, member_optimizer_state, pack_train_step,
                        stack_optimizer_states)
from utils import engine
from utils.setup import seed_everything
from utils.steps import train_step
from utils.stops import EXIT_DIVERGED

pytestmark = pytest.mark.usefixtures('one_thread')
SUBSET = ['--train-subset', 128]


def built(name, seeds, teacher=None, **flags):
    method = METHODS[name]
    args = method.defaults(depth=flags.pop('depth', 8), **flags,
                           **({'teacher': teacher, 'dataset': 'fashionmnist'}
                              if needs_teacher(name) else {}))
    if needs_teacher(name):
        method.check_flags(args)
    models = []
    for seed in seeds:
        seed_everything(seed)
        models.append(method.build_model(args, 10).double())
    return method, args, models


PACKABLE = [(name, {}) for name in METHODS if name != 'dml'] + [
    ('dml', {'update': 'simultaneous'}),
    ('one', {'arch': 'okddip_densenet', 'depth': 10, 'growth_rate': 4}),   # tied weights
    ('kdcl', {'icl': True})]


@pytest.mark.parametrize('name, flags', PACKABLE, ids=[f'{n}-{"-".join(map(str, f.values()))}'
                                                       for n, f in PACKABLE])
def test_a_packed_step_is_each_runs_own_step(name, flags, teacher):
    """In float64, two SGD steps of a pack leave every member's weights, BatchNorm statistics
    and momentum where the same steps of its model alone leave them (to 1e-10)."""
    method, args, models = built(name, (5, 6), teacher, **flags)
    alone = copy.deepcopy(models)
    pack = Pack(models).train()
    objective = method.objective(args)
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    optimizer = torch.optim.SGD([p for p in pack.parameters() if p.requires_grad], **sgd)
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], **sgd)
                  for m in alone]
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    views = method.views(args)
    shape = (2, views, 6, 3, 32, 32) if views > 1 else (2, 6, 3, 32, 32)
    images = torch.randn(shape, dtype=torch.float64)
    targets = torch.randint(0, 10, (2, 6))
    for _ in range(2):
        _, losses = pack_train_step(pack, objective, optimizer, scaler, images, targets, 3, 6,
                                    'off')
        for i, model in enumerate(alone):
            model.train()
            _, loss = train_step(model, objective, optimizers[i], scaler, images[i], targets[i],
                                 3, 6, 'off')
            assert losses[i].item() == pytest.approx(loss.item(), rel=1e-12)
    packed_momentum = optimizer.state_dict()
    for i, model in enumerate(alone):
        mine = pack.member_state_dict(i)
        assert mine.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(mine[key], value, rtol=1e-10, atol=1e-12, msg=key)
        momentum = member_optimizer_state(packed_momentum, i)['state']
        for index, entry in optimizers[i].state_dict()['state'].items():
            torch.testing.assert_close(momentum[index]['momentum_buffer'],
                                       entry['momentum_buffer'], rtol=1e-10, atol=1e-12)


def test_members_load_and_give_back_their_states_exactly():
    _, _, models = built('one', (1, 2, 3), arch='okddip_densenet', depth=10, growth_rate=4)
    pack = Pack(copy.deepcopy(models))
    replacement = copy.deepcopy(models[2].state_dict())
    pack.load_member_state_dict(0, replacement)
    for key, value in pack.member_state_dict(0).items():
        assert torch.equal(value, replacement[key]), key
    assert all(torch.equal(v, models[1].state_dict()[k])
               for k, v in pack.member_state_dict(1).items())
    with pytest.raises(RuntimeError, match='does not fit the packed model'):
        pack.load_member_state_dict(1, {'fc.weight': torch.zeros(1)})
    states = [{'state': {0: {'momentum_buffer': torch.full((2,), float(i))}},
               'param_groups': [{'lr': 0.1, 'params': [0]}]} for i in range(3)]
    stacked = stack_optimizer_states(states)
    assert stacked['state'][0]['momentum_buffer'].shape == (3, 2)
    assert all(torch.equal(member_optimizer_state(stacked, i)['state'][0]['momentum_buffer'],
                           states[i]['state'][0]['momentum_buffer']) for i in range(3))


@pytest.mark.parametrize('views', [1, 2])
def test_each_member_gets_the_batches_of_its_run_alone(views):
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40)

    def loader(seed):
        return DeviceLoader(images, labels, (0.5,) * 3, (0.2,) * 3, 16, shuffle=True,
                            augment=True, seed=seed, views=views)
    pack = PackLoader(loader(0), [3, 8])
    for epoch in (0, 4):
        for (x, y), *alone in zip(pack.batches(epoch, 1), loader(3).batches(epoch, 1),
                                  loader(8).batches(epoch, 1)):
            for i, (xi, yi) in enumerate(alone):
                assert torch.equal(x[i], xi) and torch.equal(y[i], yi)


# ----------------------------------------------------------------------------- the command line

def pack_run(fashion_root, folder, *flags, script=cifar_one):
    return script.main(without_seed(tiny(fashion_root, folder / 'seed{seed}', '--seeds', 3, 4,
                                         *SUBSET, *flags)))


@pytest.fixture(scope='module')
def pack(fashion_root, tmp_path_factory):
    """Two epochs of ONE, seeds 3 and 4, packed."""
    root = tmp_path_factory.mktemp('pack')
    assert pack_run(fashion_root, root, '--epochs', 2) == 0
    return root


def test_a_packed_run_is_close_to_its_run_alone(fashion_root, tmp_path):
    """Two steps of ONE (an epoch of 128 images): each packed run's weights within the CUDA
    tests' float32 tolerance of its run alone (other kernels: vmap's grouped convolutions)."""
    assert pack_run(fashion_root, tmp_path / 'pack', '--epochs', 1) == 0
    for seed in (3, 4):
        state = load(tmp_path / 'pack' / f'seed{seed}' / 'checkpoint.pth.tar')
        alone = tmp_path / f'alone{seed}'
        assert cifar_one.main(tiny(fashion_root, alone, '--manualSeed', seed, '--epochs', 1,
                                   *SUBSET)) == 0
        solo = load(alone / 'checkpoint.pth.tar')
        assert_close_tensors(state['state_dict'], solo['state_dict'], FP32, f'seed {seed}')
        assert state['history'][0]['train_loss'] == pytest.approx(
            solo['history'][0]['train_loss'], rel=1e-5)


def test_every_run_of_a_pack_is_an_ordinary_run(pack, fashion_root, tmp_path, capsys):
    for seed in (3, 4):
        folder = pack / f'seed{seed}'
        state = load(folder / 'checkpoint.pth.tar')
        args = json.loads((folder / 'args.json').read_text())
        assert (state['seed'], args['manualSeed'], args['seeds'], state['epoch']) == (
            seed, seed, [3, 4], 2)
        assert json.loads((folder / 'status.json').read_text())['state'] == 'done'
        # -e and export treat it as any run
        capsys.readouterr()
        assert cifar_one.main(tiny(fashion_root, tmp_path / 'x', '-e', '--resume',
                                   folder / 'checkpoint.pth.tar')) == 0
        assert f'{state["history"][-1]["test_acc_1"]:.2f}' in capsys.readouterr().out
        assert export_branch.main([str(folder / 'checkpoint.pth.tar'), '-o',
                                   str(tmp_path / f'b{seed}.pth.tar')]) == 0
    assert report.main([str(pack), '--out', str(tmp_path / 'report'), '--no-plots']) == 0
    with open(tmp_path / 'report' / 'table_last.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert {(row['n'], row['seeds']) for row in rows} == {('2', '3;4')}   # averaged as two runs


def test_a_pack_resumes_as_a_whole_bitwise_and_a_run_of_it_alone(pack, fashion_root, tmp_path):
    split = tmp_path / 'split'
    assert pack_run(fashion_root, split, '--epochs', 1) == 0
    assert pack_run(fashion_root, split, '--epochs', 2, '--resume', 'auto') == 0
    for seed in (3, 4):
        assert_same_run(pack / f'seed{seed}' / 'checkpoint.pth.tar',
                        split / f'seed{seed}' / 'checkpoint.pth.tar')
    # a run of the pack continues alone from its folder
    assert cifar_one.main(without_seed(tiny(fashion_root, split / 'seed4', '--epochs', 3,
                                      '--resume', 'auto', *SUBSET))) == 0
    assert load(split / 'seed4' / 'checkpoint.pth.tar')['epoch'] == 3


@pytest.mark.parametrize('name', list(METHODS))
def test_every_method_packs_or_refuses_in_one_line(name, fashion_root, teacher, tmp_path, capsys):
    flags = ['--teacher', teacher] if needs_teacher(name) else []
    script = entry(name)
    if name == 'dml':         # its paper's alternating updates are one network at a time
        assert pack_run(fashion_root, tmp_path, '--epochs', 1, *flags, script=script) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and '--update simultaneous' in err[0]
        assert not any(tmp_path.iterdir())
        flags += ['--update', 'simultaneous']
    assert pack_run(fashion_root, tmp_path, '--epochs', 1, *flags, script=script) == 0
    for seed in (3, 4):
        state = load(tmp_path / f'seed{seed}' / 'checkpoint.pth.tar')
        assert (state['method'], state['seed'], state['epoch']) == (name, seed, 1)


@pytest.mark.parametrize('flags, named', [
    (['--seeds', 3, 3], 'each seed once'),
    (['--seeds', 3, 4, '--manualSeed', 1], 'drop --manualSeed'),   # beside the tiny run's
    (['--seeds', 3, 4, '-a', 'wrn', '--depth', 10, '--widen-factor', 1, '--drop', 0.3],
     'dropout masks'),
    (['--seeds', 3, 4, '-e', '--resume', 'x'], '-e evaluates one checkpoint'),
    (['--seeds', 3, 4, '--amp', 'fp16'], '--amp bf16'),
])
def test_what_a_pack_cannot_hold_is_refused_in_one_line(flags, named, fashion_root, tmp_path,
                                                         capsys):
    argv = tiny(fashion_root, tmp_path / 'p' / 'seed{seed}', *flags)
    assert cifar_one.main(argv if '--manualSeed' in flags else without_seed(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert not (tmp_path / 'p').exists()


def test_one_seed_is_one_run_in_its_folder_and_a_seed_template_needs_seeds(
        fashion_root, tmp_path, capsys):
    """What a stopped pack's advice says (--seeds with the seeds left) works for one seed too:
    an ordinary run in that seed's folder; -c with {seed} but no --seeds is refused."""
    assert cifar_one.main(without_seed(tiny(fashion_root, tmp_path / 'seed{seed}', '--seeds', 4,
                                      '--epochs', 1, *SUBSET))) == 0
    state = load(tmp_path / 'seed4' / 'checkpoint.pth.tar')
    assert (state['seed'], state['epoch'], state['args']['channels_last']) == (4, 1, True)
    capsys.readouterr()
    assert cifar_one.main(tiny(fashion_root, tmp_path / 'x{seed}', '--epochs', 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--seeds fills in {seed}' in err[0], err
    assert not (tmp_path / 'x{seed}').exists()


def test_a_pack_whose_runs_stand_apart_is_refused(pack, fashion_root, tmp_path, capsys):
    mixed = tmp_path / 'mixed'
    assert cifar_one.main(tiny(fashion_root, mixed / 'seed3', '--manualSeed', 3, '--epochs', 1,
                               *SUBSET)) == 0
    capsys.readouterr()
    assert pack_run(fashion_root, mixed, '--epochs', 2, '--resume', 'auto') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'as a whole' in err[0], err
    assert not (mixed / 'seed4').exists()


def test_a_run_that_diverges_stops_its_pack_and_only_it_is_marked_diverged(
        fashion_root, tmp_path, monkeypatch):
    """A NaN loss of seed 4 in epoch 2 stops the pack: seed 4 is diverged (a relaunched sweep
    leaves it), seed 3 failed with it, which a relaunch continues from its last epoch."""
    check = engine.Trainer.check

    def nan_for_seed_4(self, meters, stop):
        if (self.epoch, self.step) == (1, 1):
            meters.nonfinite[1] = True
        return check(self, meters, stop)
    monkeypatch.setattr(engine.Trainer, 'check', nan_for_seed_4)
    assert pack_run(fashion_root, tmp_path, '--epochs', 2) == EXIT_DIVERGED
    healthy, bad = (json.loads((tmp_path / f'seed{seed}' / 'status.json').read_text())
                    for seed in (3, 4))
    assert (bad['state'], bad['epoch']) == ('diverged', 1)
    assert 'the loss of seed 4 became NaN or Inf in epoch 2' in bad['message']
    assert (healthy['state'], healthy['epoch']) == ('failed', 1)
    assert healthy['message'] == f'stopped with its pack: {bad["message"]}'


def test_a_pack_whose_runs_are_all_done_says_so_and_one_half_done_is_refused(
        pack, fashion_root, tmp_path, capsys):
    capsys.readouterr()
    assert pack_run(fashion_root, pack, '--epochs', 2, '--resume', 'auto') == 0
    out = capsys.readouterr().out
    assert out.count('already trained its 2 epochs') == 2
    half = tmp_path / 'half'
    assert pack_run(fashion_root, half, '--epochs', 1) == 0
    assert cifar_one.main(without_seed(tiny(fashion_root, half / 'seed3', '--epochs', 2, '--resume',
                                      'auto', *SUBSET))) == 0
    capsys.readouterr()
    assert pack_run(fashion_root, half, '--epochs', 2, '--resume', 'auto') == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'seed(s) 3 have trained all their epochs' in err[0], err
    assert '--seeds 4' in err[0]


def test_a_pack_writes_no_run_before_every_folder_is_its(fashion_root, tmp_path, capsys):
    """One run's folder held by another process: the pack stops in one line before writing a
    file into any run's folder."""
    from utils.runlock import hold_run_lock
    with hold_run_lock(str(tmp_path / 'seed4')):
        assert pack_run(fashion_root, tmp_path, '--epochs', 1) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not any(name.endswith(('.json', '.tar')) for name in os.listdir(tmp_path / 'seed3'))


def test_a_save_that_fails_for_one_run_leaves_every_run_at_its_last_epoch(
        fashion_root, tmp_path, monkeypatch, capsys):
    """Epoch 2's files of seed 4 cannot be written (a full disk, say): neither run moves to
    epoch 2, so the pack continues as a whole."""
    import utils.run_state
    real = utils.run_state.checkpoint_writer

    def failing(state):
        if state['seed'] == 4 and state['epoch'] == 2:
            def write(f):
                raise OSError(28, 'No space left on device')
            return write
        return real(state)
    assert pack_run(fashion_root, tmp_path, '--epochs', 1) == 0
    monkeypatch.setattr(utils.run_state, 'checkpoint_writer', failing)
    assert pack_run(fashion_root, tmp_path, '--epochs', 2, '--resume', 'auto') == 2
    assert 'No space left' in capsys.readouterr().err
    for seed in (3, 4):
        assert load(tmp_path / f'seed{seed}' / 'checkpoint.pth.tar')['epoch'] == 1
        status = json.loads((tmp_path / f'seed{seed}' / 'status.json').read_text())
        assert status['epoch'] == 1
    monkeypatch.setattr(utils.run_state, 'checkpoint_writer', real)
    assert pack_run(fashion_root, tmp_path, '--epochs', 2, '--resume', 'auto') == 0


def test_a_pack_stopped_mid_epoch_resumes_to_the_bits_of_one_never_stopped(
        pack, fashion_root, tmp_path, monkeypatch):
    """SIGTERM after the first step of epoch 2: every run saves that exact step; the pack
    continued with --resume auto ends where the uninterrupted pack did, bit for bit."""
    import signal
    from utils.engine import Trainer
    real, steps = Trainer.train_and_count, []

    def count_and_stop(self, *args, **kwargs):
        steps.append(None)
        if len(steps) == 3:          # epoch 1 is 2 steps of 64 of the 128 images
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, 'train_and_count', count_and_stop)
    assert pack_run(fashion_root, tmp_path, '--epochs', 2) == 128 + signal.SIGTERM
    for seed in (3, 4):
        state = load(tmp_path / f'seed{seed}' / 'checkpoint.pth.tar')
        assert (state['epoch'], state['step']) == (1, 1)
    monkeypatch.setattr(Trainer, 'train_and_count', real)
    assert pack_run(fashion_root, tmp_path, '--epochs', 2, '--resume', 'auto') == 0
    for seed in (3, 4):
        assert_same_run(pack / f'seed{seed}' / 'checkpoint.pth.tar',
                        tmp_path / f'seed{seed}' / 'checkpoint.pth.tar')

"""--dataset imagenet on a small ImageFolder of real JPEG files that the tests write: the
layout checks, the loader (workers, determinism, mid-epoch start, rank shares, unreadable
images), torchvision's networks under every method, export into torchvision's constructor,
top-5, and the recipe's defaults."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torchvision

import cifar_baseline
import cifar_one
import export_branch
from conftest import ROOT, assert_same_run, entry, load
from fakedata import write_image_folder
from methods import METHODS
from methods.published import lookup
from models import branch_state_dict
from models.output import ModelOutput, column_hits
from reports.runs import variant_flags
from test_distributed import torchrun
from utils.cli import build_parser, parse_flags
from utils.errors import UserError
from utils.imagefolder import (FolderLoader, UnreadableImage, check_same_images,
                               listing_records, scan, train_transform)

pytestmark = pytest.mark.usefixtures('one_thread')

CLASSES = 6
# 48 training images in 3 batches of 16, 18 validation images, 32x32 crops, 2 loader workers.
SMALL = ['-d', 'imagenet', '--image-size', '32', '--train-batch', '16', '--test-batch', '9',
         '-j', '2', '--manualSeed', '3']


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp('imagenet')), classes=CLASSES)


def small(root, run, *extra):
    return [*SMALL, '--data-dir', root, '-c', str(run), *map(str, extra)]


def printed_accuracy(out, label):
    """(top-1, top-5) from -e's line for `label`."""
    line = next(l for l in out.splitlines() if l.strip().startswith(label))
    return tuple(map(float, line.split()[-2:]))


# ----------------------------------------------------------------------------- the loader

def loader(root, workers, **kwargs):
    samples, _ = scan(root)
    return FolderLoader(samples['train'], train_transform(32), (0.5,) * 3, (0.25,) * 3, 16,
                        shuffle=True, device=torch.device('cpu'), workers=workers, seed=5,
                        **kwargs)


def test_the_listing_is_torchvisions_imagefolder(folder):
    samples, classes = scan(folder)
    for split in ('train', 'val'):
        reference = torchvision.datasets.ImageFolder(os.path.join(folder, split))
        assert samples[split] == reference.samples and classes == reference.classes
    assert len(samples['train']) == 48 and len(samples['val']) == 18


# A layout of empty files (the listing opens none): nested folders, other files, names that
# sort differently by case and by folder.
FILES = ['train/n0/b.JPEG', 'train/n0/A.png', 'train/n0/notes.txt', 'train/n0/sub/c.jpg',
         'train/n0/sub/deeper/d.JPEG', 'train/n0/sub b/e.jpeg', 'train/n1/a.JPEG',
         'train/n1/Z/a.JPEG', 'val/n0/v.JPEG', 'val/n1/w.JPEG', 'val/n1/x/y.PNG']


def layout(root, files=FILES):
    for name in files:
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        open(os.path.join(root, name), 'w').close()
    return str(root)


def test_the_listing_of_nested_folders_is_make_datasets(tmp_path):
    root = layout(tmp_path)
    samples, classes = scan(root)
    for split in ('train', 'val'):
        reference = torchvision.datasets.folder.make_dataset(
            os.path.join(root, split), {'n0': 0, 'n1': 1},
            torchvision.datasets.folder.IMG_EXTENSIONS)
        assert samples[split] == reference and classes == ['n0', 'n1']


def folders_and_images(root):
    """Every folder a listing enters (the data folder, the splits, the class folders and the
    folders inside them) and every image it lists."""
    samples, _ = scan(root)
    images = [path for split in samples.values() for path, _ in split]
    folders = {root} | {os.path.dirname(os.path.join(root, name)) for name in FILES}
    folders |= {os.path.dirname(folder) for folder in folders if folder != root}
    return sorted(folders), images


def listed(root):
    """{path relative to ROOT: class} of both splits."""
    samples, _ = scan(root)
    return {os.path.relpath(path, root): target for split in samples.values()
            for path, target in split}


def test_a_link_to_anything_listed_is_refused_so_no_image_counts_twice(tmp_path):
    """In every class folder and every folder inside one, a symbolic link to every folder the
    listing enters (a loop up to a split or the data folder, its own or another class, the
    other split) and to every image it lists (in its class, another class, the other split):
    refused in one line naming the link. Without that, `ln -s .. train/n0/loop` listed every
    class's images again as n0's (40 levels deep: 738 images instead of 18)."""
    root = layout(tmp_path / 'data')
    folders, images = folders_and_images(root)
    places = [f for f in folders if os.path.relpath(f, root).count(os.sep) >= 1]
    for place in places:
        for target, name in [(f, 'link') for f in folders] + [(i, 'link.JPEG') for i in images]:
            link = os.path.join(place, name)
            os.symlink(os.path.relpath(target, place), link)
            with pytest.raises(UserError) as refused:
                scan(root)
            os.remove(link)
            line = str(refused.value)
            assert os.path.relpath(link, root) in line and 'under two names' in line, \
                (link, target, line)
    assert listed(root) == listed(layout(tmp_path / 'copy'))   # every link removed again


def test_links_to_what_is_not_listed_are_followed_once(tmp_path):
    """A split, a class folder, a folder inside one or an image may be a link to files kept
    elsewhere (a subset of ILSVRC made of links): listed as a copy of them would be."""
    copy = listed(layout(tmp_path / 'copy'))
    root, elsewhere = tmp_path / 'data', tmp_path / 'elsewhere'
    layout(root)
    for moved in ('val', 'train/n1', 'train/n0/sub', 'train/n0/b.JPEG'):
        os.renames(root / moved, elsewhere / moved)
        os.symlink(elsewhere / moved, root / moved)
        assert listed(str(root)) == copy, moved
    two = tmp_path / 'two'   # one folder of images linked from two classes is refused
    layout(two)
    os.symlink(elsewhere / 'train/n0/sub', two / 'train/n1/sub')
    os.symlink(elsewhere / 'train/n0/sub', two / 'train/n0/more')
    with pytest.raises(UserError, match='train/n0/more and train/n1/sub are one folder under '
                                        'two names'):
        scan(str(two))


def test_pixels_are_a_function_of_seed_and_epoch_not_of_workers_or_start(folder):
    """0 or 2 worker processes, from the first batch or from batch 1: the same pixels, so a
    run resumed mid-epoch sees exactly what an uninterrupted one would."""
    whole = list(loader(folder, 0).batches(epoch=4))
    assert len(whole) == 3 and whole[0][0].shape == (16, 3, 32, 32)
    with_workers = list(loader(folder, 2).batches(epoch=4))
    from_batch_1 = list(loader(folder, 2).batches(epoch=4, start=1))
    for (a, ya), (b, yb) in zip(whole, with_workers):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    for (a, ya), (b, yb) in zip(whole[1:], from_batch_1):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    other_epoch = next(loader(folder, 0).batches(epoch=5))[0]
    assert not torch.equal(whole[0][0], other_epoch)


def test_ranks_share_each_global_batch(folder):
    """Two ranks' shares of each global batch are the single process's batch, halved."""
    whole = list(loader(folder, 0).batches(epoch=1))
    shares = [list(loader(folder, 0, rank=r, world_size=2).batches(epoch=1)) for r in (0, 1)]
    for k, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][k][0], shares[1][k][0]]), images)
        assert torch.equal(torch.cat([shares[0][k][1], shares[1][k][1]]), labels)


def test_top5_counts_a_target_among_the_five_highest():
    logits = torch.tensor([[9., 8, 7, 6, 5, 4, 3], [1, 2, 3, 4, 5, 6, 7]])
    targets = torch.tensor([4, 1])   # 5th highest of row 0: a top-5 hit; 6th of row 1: none
    hits = column_hits(ModelOutput(logits.unsqueeze(0)), targets, ['1'])
    assert hits.tolist() == [[0], [1]]
    assert column_hits(logits, torch.tensor([0, 6]), ['1']).tolist() == [[2], [2]]


# ----------------------------------------------------------------------------- the recipe

def test_the_imagenet_recipe_is_every_methods_default_and_given_flags_win():
    for name in ('one', 'okddip', 'dml'):
        args = METHODS[name].defaults(dataset='imagenet')
        assert (args.arch, args.depth, args.epochs, args.train_batch, args.lr, args.schedule,
                args.weight_decay, args.momentum) == (
            'resnet18', 18, 90, 256, 0.1, [30, 60], 1e-4, 0.9), name
    parser = build_parser('', METHODS['one'])
    assert parse_flags(parser, ['-d', 'imagenet', '--train-batch', '1024']).lr == 0.4
    given = parse_flags(build_parser('', METHODS['one']),
                        ['-d', 'imagenet', '--lr', '0.05', '--epochs', '120', '-a', 'resnet50'])
    assert (given.lr, given.epochs, given.arch) == (0.05, 120, 'resnet50')
    cifar = METHODS['one'].defaults()
    assert (cifar.arch, cifar.epochs, cifar.lr, cifar.schedule) == ('one_resnet', 300, 0.1, [151, 225])


@pytest.mark.parametrize('method, arch, depth, error', [
    ('baseline', 'resnet18', 18, 30.48), ('one', 'resnet18', 18, 29.45),
    ('baseline', 'resnext50_32x4d', 50, 22.62), ('one', 'resnext50_32x4d', 50, 21.85)])
def test_a_run_of_the_recipe_meets_the_papers_imagenet_row(method, arch, depth, error):
    """The recipe's run has no variant flags, so report.py compares it with the ONE paper's
    ImageNet entry (90 epochs; secondary, the ResNeXt-50 one recalled: docs/FIDELITY.md)."""
    args = vars(METHODS[method].defaults(dataset='imagenet', arch=arch))
    assert variant_flags(method, args) == ((), ())
    entry = lookup(method, (), arch, depth, 'imagenet', '1')[0]
    assert (entry.error, entry.epochs, entry.secondary) == (error, 90, True)
    assert variant_flags(method, {**args, 'weight_decay': 5e-4}) != ((), ())


# ----------------------------------------------------------------------------- every method

@pytest.fixture(scope='module')
def teacher_run(folder, tmp_path_factory):
    run = tmp_path_factory.mktemp('inet_teacher') / 'baseline'
    assert cifar_baseline.main(small(folder, run, '--epochs', 1)) == 0
    return run / 'checkpoint.pth.tar'


@pytest.mark.parametrize('name', list(METHODS))
def test_every_method_trains_on_torchvision_resnet18_and_evaluates_top5(
        name, folder, teacher_run, tmp_path, capsys):
    run = tmp_path / 'run'
    extra = ['--teacher', teacher_run] if name == 'kd' else []
    assert entry(name).main(small(folder, run, '--epochs', 1, *extra)) == 0
    state = load(run / 'checkpoint.pth.tar')
    assert (state['arch'], state['depth'], state['dataset'], state['num_classes']) == (
        'resnet18', 18, 'imagenet', CLASSES)
    row = state['history'][-1]
    assert row['lr'] == pytest.approx(0.1 * 16 / 256)
    assert row['test_acc_1'] <= row['test_acc5_1'] <= 100
    log = (run / 'log.txt').read_text().splitlines()[0].split('\t')
    assert log[:2] == ['TAcc_1', 'VAcc_1'] and 'V5Acc_1' in log
    capsys.readouterr()
    assert entry(name).main(small(folder, tmp_path / 'unused', *extra, '-e', '--resume',
                                  run / 'checkpoint.pth.tar')) == 0
    out = capsys.readouterr().out
    assert 'top-1 and top-5' in out
    assert printed_accuracy(out, METHODS[name].label('1')) == pytest.approx(
        (row['test_acc_1'], row['test_acc5_1']), abs=0.005)


def test_one_resumes_bitwise_and_its_branch_loads_into_torchvision(folder, tmp_path, capsys):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert cifar_one.main(small(folder, straight, '--epochs', 2)) == 0
    assert cifar_one.main(small(folder, split, '--epochs', 1)) == 0
    assert cifar_one.main(small(folder, split, '--epochs', 2, '--resume', 'auto')) == 0
    assert_same_run(straight / 'checkpoint.pth.tar', split / 'checkpoint.pth.tar')

    exported = tmp_path / 'branch2.pth.tar'
    assert export_branch.main([str(straight / 'checkpoint.pth.tar'), '--branch', '2',
                               '-o', str(exported)]) == 0
    network = torchvision.models.resnet18(num_classes=CLASSES)
    network.load_state_dict(load(exported)['state_dict'], strict=True)
    capsys.readouterr()
    assert cifar_baseline.main(small(folder, tmp_path / 'unused', '-a', 'resnet18', '-e',
                                     '--resume', exported)) == 0
    branch_2 = load(straight / 'checkpoint.pth.tar')['history'][-1]['test_acc_2']
    assert printed_accuracy(capsys.readouterr().out, 'network 1')[0] == pytest.approx(
        branch_2, abs=0.005)


def test_sharded_evaluation_under_torchrun_counts_every_val_image_once(folder, teacher_run,
                                                                      tmp_path):
    """18 validation images over 2 gloo ranks, read by each rank's workers: the single
    process's top-1 and top-5, line for line."""
    argv = small(folder, tmp_path / 'x', '-e', '--resume', teacher_run)
    single = subprocess.run([sys.executable, os.path.join(ROOT, 'cifar_baseline.py'),
                             *map(str, argv)], capture_output=True, text=True, timeout=300)
    distributed = torchrun('cifar_baseline.py', *argv)
    assert single.returncode == 0 and distributed.returncode == 0, distributed.stderr
    assert distributed.stdout == single.stdout and '18 images: top-1 and top-5' in single.stdout


@pytest.mark.parametrize('arch', ['resnet18', 'resnet34', 'resnet50', 'resnext50_32x4d'])
def test_every_torchvision_network_splits_into_branches_it_loads_back(arch):
    """On the meta device (no weights computed): ONE over each network has torchvision's own
    keys for trunk + branch K, and branches at layer4 by default."""
    args = METHODS['one'].defaults(dataset='imagenet', arch=arch)
    with torch.device('meta'):
        model = METHODS['one'].build_model(args, 10)
        plain = getattr(torchvision.models, arch)(num_classes=10)
    assert model.branch_point == 'stage4' and model.shared_stages == ('layer1', 'layer2', 'layer3')
    exported = branch_state_dict(model.state_dict(), 2)
    assert {k: v.shape for k, v in exported.items()} == {
        k: v.shape for k, v in plain.state_dict().items()}


# ----------------------------------------------------------------------------- bad input

def break_layout(root, how):
    if how == 'no val':
        os.rename(os.path.join(root, 'val'), os.path.join(root, 'validation'))
    elif how == 'other classes':
        os.rename(os.path.join(root, 'val', 'n00000005'), os.path.join(root, 'val', 'n00000099'))
    elif how == 'empty class':
        folder = os.path.join(root, 'train', 'n00000002')
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
    elif how == 'link loop':
        os.symlink('..', os.path.join(root, 'train', 'n00000000', 'loop'))


@pytest.mark.parametrize('how, message', [
    ('no val', 'there is no val/ folder; lay ImageNet out as DIR/train/CLASS/*.JPEG'),
    ('other classes', 'train/ and val/ have different class folders (1 in train/ only, 1 in '
                      'val/ only; n00000005 is in train/ only)'),
    ('empty class', 'train/n00000002 holds no image'),
    ('link loop', 'train and train/n00000000/loop are one folder under two names'),
])
def test_a_bad_layout_is_one_line_before_any_file(how, message, tmp_path, capsys):
    root = write_image_folder(str(tmp_path / 'data'), classes=CLASSES, train_per_class=2,
                              val_per_class=1)
    break_layout(root, how)
    assert cifar_one.main(small(root, tmp_path / 'run', '--epochs', 1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('flags, message', [
    (['-a', 'one_resnet'], '-a one_resnet is a network for 32x32 images; on --dataset imagenet'),
    (['--depth', '50'], '--depth 50: -a resnet18 has 18 layers'),
    (['--image-size', '16'], '--image-size must be at least 32'),
    (['--widen-factor', '2'], '--widen-factor: ResNet-18 (-a resnet18) has no such setting'),
])
def test_bad_imagenet_flags(flags, message, folder, tmp_path, capsys):
    assert cifar_one.main(small(folder, tmp_path / 'run', '--epochs', 1, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / 'run').exists()


def test_an_imagenet_network_on_cifar_is_refused(fashion_root, tmp_path, capsys):
    assert cifar_baseline.main(['-d', 'fashionmnist', '--data-dir', fashion_root, '-a',
                                'resnet18', '-c', str(tmp_path / 'run')]) == 2
    assert '-a resnet18 is an ImageNet network' in capsys.readouterr().err


def test_an_unreadable_image_stops_naming_it_or_is_skipped_and_counted(tmp_path, capsys):
    root = write_image_folder(str(tmp_path / 'data'), classes=CLASSES, train_per_class=4,
                              val_per_class=1)
    bad = os.path.join(root, 'train', 'n00000003', 'train_3_1.JPEG')
    with open(bad, 'r+b') as f:
        f.truncate(200)    # a truncated JPEG: the header parses, the pixels do not
    run = tmp_path / 'run'
    assert cifar_baseline.main(small(root, run, '--epochs', 1, '--train-batch', 8)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f'cannot read image {bad}' in err[0], err
    assert 'Traceback' not in '\n'.join(err) and 'saved in' in err[0]
    assert load(run / 'checkpoint.pth.tar')['epoch'] == 0      # the steps before it, kept
    assert 'replace it by a readable image of the same name' in err[0]
    assert cifar_baseline.main(small(root, tmp_path / 'skip', '--epochs', 1, '--train-batch', 8,
                                '--bad-images', 'skip')) == 0
    assert f'1 unreadable training image(s) left out so far (first: {bad})' in \
        capsys.readouterr().out

    # Resuming mid-epoch after removing the image is refused, and touches nothing; so is every
    # other change of the list (an image added, renamed or moved to another class, a
    # validation image added), checked against the checkpoint's record. With the bad image
    # replaced by a readable one of the same name, the run would go on.
    saved = (run / 'checkpoint.pth.tar').read_bytes()
    for change in ('remove', 'add', 'rename', 'move', 'add val'):
        changed = str(tmp_path / change)
        shutil.copytree(root, changed)
        image = bad.replace(root, changed)
        if change == 'remove':
            os.remove(image)
        elif change == 'add':
            shutil.copy(image, image.replace('_1.JPEG', '_9.JPEG'))
        elif change == 'rename':
            os.rename(image, image.replace('_1.JPEG', '_9.JPEG'))
        elif change == 'move':
            os.rename(image, image.replace('n00000003', 'n00000004'))
        else:
            val = os.path.join(changed, 'val', 'n00000001', 'val_1_0.JPEG')
            shutil.copy(val, val.replace('_0.JPEG', '_9.JPEG'))
        with pytest.raises(UserError, match='was trained over other images than'):
            check_same_images(load(run / 'checkpoint.pth.tar')['listing'],
                              listing_records(scan(changed)[0], changed), 'x', changed)
    assert cifar_baseline.main(small(str(tmp_path / 'remove'), run, '--epochs', 1, '--train-batch', 8,
                                '--resume', 'auto')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'was trained over other images than' in err[0], err
    assert '(24 train images then, 23 now)' in err[0] and '--bad-images skip' in err[0], err
    assert (run / 'checkpoint.pth.tar').read_bytes() == saved
    shutil.copy(bad.replace('_1.JPEG', '_0.JPEG'), bad)
    assert cifar_baseline.main(small(root, run, '--epochs', 1, '--train-batch', 8,
                                '--resume', 'auto', '--check-only')) == 0
    assert 'check-only: would resume' in capsys.readouterr().out


# ----------------------------------------------------------------------------- benchmark

def test_benchmark_puts_the_loader_beside_the_step(folder, tmp_path, capsys):
    import json
    import benchmark
    out = tmp_path / 'bench.json'
    assert benchmark.main(['--dataset', 'imagenet', '--data-dir', folder, '--image-size', '32',
                           '--batch', '8', '--steps', '2', '--warmup', '1', '--workers', '2',
                           '--json', str(out)]) == 0
    row, = json.loads(out.read_text())['results']
    assert row['model'] == 'one_resnet18' and row['workers'] == 2
    assert row['loader_img_s_per_worker'] > 0 and row['loader_img_s'] > 0 and row['step_img_s'] > 0
    slower = min(row['loader_img_s'], row['step_img_s'])
    assert row['bound_by'] == ('data' if row['loader_img_s'] < row['step_img_s'] else 'compute')
    assert row['projected_hours_90_epochs'] == pytest.approx(90 * 1_281_167 / slower / 3600)
    assert row['projected_hours_90_epochs_8_devices'] == pytest.approx(
        row['projected_hours_90_epochs'] / 8)
    assert 'projected 90 epochs of ILSVRC-2012' in capsys.readouterr().out


@pytest.mark.parametrize('flags, message', [
    (['--dataset', 'imagenet'], '--dataset imagenet needs --data-dir'),
    (['--models', 'resnet18'], 'resnet18 is an ImageNet network: add --dataset imagenet'),
    (['--dataset', 'imagenet', '--data-dir', 'x', '--models', 'resnet-32'],
     "--dataset imagenet measures torchvision's networks"),
])
def test_benchmark_refuses_a_mismatched_dataset(flags, message, capsys):
    import benchmark
    assert benchmark.main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_report_gives_top1_and_top5(folder, teacher_run, tmp_path,
                                                          capsys):
    """report.py over an ImageNet run: top-5 columns in the table and the CSV, at the epoch
    the top-1 selection picks. (A tiny run is a variant, so it meets no published row: the
    recipe's run does, test_a_run_of_the_recipe_meets_the_papers_imagenet_row.)"""
    import csv
    import report
    code = report.main([str(teacher_run.parent), '--out', str(tmp_path / 'out'), '--no-plots'])
    out = capsys.readouterr().out
    assert code == 0
    row = load(teacher_run)['history'][-1]
    line = next(l for l in out.splitlines() if l.startswith('| imagenet | ResNet-18 | baseline'))
    cells = [c.strip() for c in line.strip('|').split('|')]
    assert cells[4:8] == [f'{100 - row["test_acc_1"]:.2f}', '-',
                          f'{100 - row["test_acc5_1"]:.2f}', '-']
    assert '| top-5 error % | top-5 std |' in out
    table, = csv.DictReader(open(tmp_path / 'out' / 'table_last.csv'))
    assert float(table['top5_error_mean']) == pytest.approx(100 - row['test_acc5_1'], abs=1e-4)


def test_a_sweep_grid_of_imagenet_runs(folder, tmp_path):
    """sweep.py checks and runs ImageNet runs like any other (local executor; SLURM's is the
    same submitit job, tests/test_slurm.py)."""
    import json
    root = tmp_path / 'grid'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'sweep.py'), '--root', str(root),
                           '--scripts', 'cifar_one.py', '--executor', 'local', '--vary',
                           'num-branches=2', '--', *SMALL, '--data-dir', folder, '--epochs', '1'],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = root / 'cifar_one' / 'num-branches=2'
    assert json.loads((run / 'status.json').read_text())['state'] == 'done'
    state = load(run / 'checkpoint.pth.tar')
    assert (state['dataset'], state['arch'], state['num_branches']) == ('imagenet', 'resnet18', 2)
    assert 'test_acc5_ens' in state['history'][-1]

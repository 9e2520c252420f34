"""Data tests: augmentation bit-exact with torchvision, the epoch plan, the loader, and
parsing of the real on-disk formats (files generated in tmp folders)."""
import gzip
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets, transforms
from torchvision.datasets.utils import calculate_md5
from torchvision.transforms import functional as TF

import utils.data as data
from fakedata import write_cifar10, write_cifar100, write_fashion_mnist, write_svhn
from utils.data import (DeviceLoader, crop_and_flip, epoch_plan, load_dataset,
                        rank_share as loader_shard)
from utils.errors import UserError

# docs/FIDELITY.md (Data): CIFAR-10's statistics, used for CIFAR-100 too.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
DEBIAN = '/usr/share/datasets/fashion-mnist'
FASHION_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def random_batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    offsets = torch.randint(0, 9, (n, 2), generator=g)
    offsets[:4] = torch.tensor([[0, 0], [0, 8], [8, 0], [8, 8]])  # the four corners
    flips = torch.rand(n, generator=g) < 0.5
    flips[:4] = torch.tensor([False, True, True, False])
    return images, offsets, flips


def to_pil(image):
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def torchvision_functional(images, offsets, flips):
    """What RandomCrop(32, padding=4) does once get_params chose (i, j), then hflip."""
    tail = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    out = []
    for image, (i, j), flip in zip(images, offsets.tolist(), flips.tolist()):
        img = TF.crop(TF.pad(to_pil(image), 4), i, j, 32, 32)
        out.append(tail(TF.hflip(img) if flip else img))
    return torch.stack(out)


def cifar_loader(images, **kwargs):
    return DeviceLoader(images, torch.arange(len(images)), CIFAR_MEAN, CIFAR_STD, **kwargs)


# --- augmentation ------------------------------------------------------------------------

@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last],
                         ids=['contiguous', 'channels_last'])
def test_crop_flip_normalize_bitwise_equal_to_torchvision(memory_format):
    images, offsets, flips = random_batch(40)
    loader = cifar_loader(images, batch_size=40, shuffle=False, augment=True,
                          memory_format=memory_format)
    ours = loader.normalize(crop_and_flip(images, offsets, flips))
    assert ours.dtype == torch.float32 and ours.shape == (40, 3, 32, 32)
    assert torch.equal(ours, torchvision_functional(images, offsets, flips))


def test_crop_and_flip_uint8_pixels():
    """Without normalisation: the crop and flip alone equal torchvision's uint8 pixels."""
    images, offsets, flips = random_batch(12, seed=1)
    ours = crop_and_flip(images, offsets, flips)
    assert ours.dtype == torch.uint8
    for k, ((i, j), flip) in enumerate(zip(offsets.tolist(), flips.tolist())):
        img = TF.crop(TF.pad(to_pil(images[k]), 4), i, j, 32, 32)
        img = TF.hflip(img) if flip else img
        assert torch.equal(ours[k], torch.from_numpy(np.array(img)).permute(2, 0, 1)), k


def test_augmentation_equals_torchvision_transform_classes(monkeypatch):
    """The real RandomCrop(32, padding=4) and RandomHorizontalFlip classes, their random
    choices forced to ours."""
    images, offsets, flips = random_batch(24, seed=2)
    chosen = iter(offsets.tolist())

    def get_params(img, output_size):
        assert img.size == (40, 40) and tuple(output_size) == (32, 32)  # padded by 4
        i, j = next(chosen)
        return i, j, 32, 32

    monkeypatch.setattr(transforms.RandomCrop, 'get_params', staticmethod(get_params))
    expected = []
    for image, flip in zip(images, flips.tolist()):
        pipeline = transforms.Compose([
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(p=1.0 if flip else 0.0),
            transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
        expected.append(pipeline(to_pil(image)))
    loader = cifar_loader(images, batch_size=24, shuffle=False, augment=True)
    assert torch.equal(loader.normalize(crop_and_flip(images, offsets, flips)),
                       torch.stack(expected))


def test_loader_batches_equal_torchvision_pipeline():
    """End to end: each augmented batch is torchvision's pipeline applied to the images the
    epoch plan picks, with the plan's offsets and flips."""
    images = random_batch(20, seed=3)[0]
    loader = cifar_loader(images, batch_size=8, shuffle=True, augment=True, seed=5)
    order, offsets, flips = epoch_plan(20, 5, 2, shuffle=True, augment=True)
    for b, (x, y) in enumerate(loader.batches(epoch=2)):
        pos = slice(8 * b, 8 * b + 8)
        assert torch.equal(y, order[pos])
        assert torch.equal(x, torchvision_functional(images[order[pos]], offsets[0, pos],
                                                     flips[0, pos]))


def test_views_are_the_same_images_each_with_its_own_crops():
    """KDCL's input distortion: view v of a batch is torchvision's pipeline on the same images
    with view v's offsets and flips; view 0 is exactly the one-view loader's batch."""
    images = random_batch(20, seed=3)[0]
    single = cifar_loader(images, batch_size=8, shuffle=True, augment=True, seed=5)
    loader = cifar_loader(images, batch_size=8, shuffle=True, augment=True, seed=5, views=3)
    order, offsets, flips = epoch_plan(20, 5, 2, shuffle=True, augment=True, views=3)
    for b, ((x, y), (x1, y1)) in enumerate(zip(loader.batches(epoch=2), single.batches(epoch=2))):
        pos = slice(8 * b, 8 * b + 8)
        assert x.shape[0] == 3 and torch.equal(y, y1) and torch.equal(x[0], x1)
        for v in range(3):
            assert torch.equal(x[v], torchvision_functional(images[order[pos]], offsets[v, pos],
                                                            flips[v, pos]))
        assert not torch.equal(x[1], x[2])


def test_no_augmentation_is_normalize_only():
    images = random_batch(10, seed=4)[0]
    loader = cifar_loader(images, batch_size=4, shuffle=False, augment=False)
    tail = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    got = torch.cat([x for x, _ in loader.batches()])
    assert torch.equal(got, torch.stack([tail(to_pil(im)) for im in images]))


# --- epoch plan --------------------------------------------------------------------------

def test_epoch_plan_is_pure():
    first = epoch_plan(500, 3, 7, shuffle=True, augment=True)
    torch.manual_seed(12345)          # the global RNG must not matter
    epoch_plan(500, 3, 8, shuffle=True, augment=True)
    again = epoch_plan(500, 3, 7, shuffle=True, augment=True)
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize('seed,epoch', [(0, 1), (1, 0), (3, 8)])
def test_epoch_plan_differs(seed, epoch):
    base = epoch_plan(500, 3, 7, shuffle=True, augment=True)
    other = epoch_plan(500, seed, epoch, shuffle=True, augment=True)
    assert not torch.equal(base[0], other[0])
    assert not torch.equal(base[1], other[1])


def test_epoch_plan_contents():
    order, offsets, flips = epoch_plan(4000, 0, 0, shuffle=True, augment=True)
    assert torch.equal(order.sort().values, torch.arange(4000))
    assert not torch.equal(order, torch.arange(4000))
    assert offsets.shape == (1, 4000, 2)
    for column in offsets[0].T:
        assert column.unique().tolist() == list(range(9))
    assert flips.dtype == torch.bool and 0.45 < flips.float().mean() < 0.55


def test_epoch_plan_without_shuffle_or_augment():
    order, offsets, flips = epoch_plan(10, 0, 3, shuffle=False, augment=False)
    assert torch.equal(order, torch.arange(10))
    assert offsets is None and flips is None


# --- loader ------------------------------------------------------------------------------

@pytest.mark.parametrize('n,batch_size,expected', [(45, 8, 6), (48, 8, 6), (1, 8, 1), (8, 8, 1),
                                                   (50000, 128, 391)])
def test_loader_len(n, batch_size, expected):
    loader = DeviceLoader(torch.zeros(n, 3, 1, 1, dtype=torch.uint8), torch.zeros(n), (0.5,) * 3,
                          (0.2,) * 3, batch_size, shuffle=True, augment=False)
    assert len(loader) == expected


@pytest.mark.parametrize('augment', [True, False])
@pytest.mark.parametrize('start', [0, 1, 3, 5])
def test_batches_resume_from_start(start, augment):
    images = random_batch(45, seed=5)[0]
    loader = cifar_loader(images, batch_size=8, shuffle=True, augment=augment, seed=1)
    full = list(loader.batches(epoch=4))
    resumed = list(loader.batches(epoch=4, start=start))
    assert len(full) == 6 and len(resumed) == 6 - start
    for (x, y), (rx, ry) in zip(full[start:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_last_partial_batch_is_kept():
    images = random_batch(45, seed=6)[0]
    loader = cifar_loader(images, batch_size=8, shuffle=True, augment=True)
    sizes = [len(y) for _, y in loader.batches(epoch=0)]
    assert sizes == [8, 8, 8, 8, 8, 5]
    labels = torch.cat([y for _, y in loader.batches(epoch=0)])
    assert torch.equal(labels.sort().values, torch.arange(45))


@pytest.mark.parametrize('world_size', [2, 3])
@pytest.mark.parametrize('augment', [True, False])
def test_ranks_share_each_batch(world_size, augment):
    images = random_batch(45, seed=7)[0]
    kwargs = dict(batch_size=8, shuffle=True, augment=augment, seed=2)
    single = list(cifar_loader(images, **kwargs).batches(epoch=1))
    ranks = [list(cifar_loader(images, rank=r, world_size=world_size, **kwargs).batches(epoch=1))
             for r in range(world_size)]
    assert all(len(r) == len(single) for r in ranks)
    for b, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([r[b][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[b][1] for r in ranks]), y)


@pytest.mark.parametrize('n,world_size', [(10, 1), (10, 2), (10, 3), (10, 4), (3, 4)])
def test_rank_share_counts_every_image_once(n, world_size):
    images, labels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.arange(n) * 10
    shards = [loader_shard(images, labels, r, world_size) for r in range(world_size)]
    assert torch.equal(torch.cat([s[0] for s in shards]), images)
    assert torch.equal(torch.cat([s[1] for s in shards]), labels)


# --- dataset files -----------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    """No network, whatever machine runs the tests: every URL fails at once."""
    calls = []

    def urlopen(request, *args, **kwargs):
        calls.append(getattr(request, 'full_url', request))
        raise urllib.error.URLError('network disabled by the test')

    monkeypatch.setattr(urllib.request, 'urlopen', urlopen)
    return calls


def md5s_of(monkeypatch, cls, folder):
    """Point the md5 lists torchvision checks at the files we wrote."""
    md5 = lambda name: calculate_md5(os.path.join(folder, name))  # noqa: E731
    monkeypatch.setattr(cls, 'train_list', [[f, md5(f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, 'test_list', [[f, md5(f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, 'meta', dict(cls.meta, md5=md5(cls.meta['filename'])))


def check_split(images, labels, written_images, written_labels):
    n = len(written_images)
    assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(written_images))
    assert torch.equal(labels, torch.from_numpy(np.asarray(written_labels, dtype=np.int64)))


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_load_cifar(name, tmp_path, monkeypatch, offline):
    cls, writer, folder, classes = {
        'cifar10': (datasets.CIFAR10, write_cifar10, 'cifar-10-batches-py', 10),
        'cifar100': (datasets.CIFAR100, write_cifar100, 'cifar-100-python', 100)}[name]
    written = writer(str(tmp_path))
    md5s_of(monkeypatch, cls, tmp_path / folder)
    ds = load_dataset(name, str(tmp_path))
    check_split(ds.train_images, ds.train_labels, *written['train'])
    check_split(ds.test_images, ds.test_labels, *written['test'])
    # Against the file layout itself: row i of 'data' holds R, G, B planes, row-major.
    flat = written['train'][0].reshape(len(written['train'][0]), -1)
    for i, c, h, w in [(0, 0, 0, 1), (3, 1, 5, 30), (len(flat) - 1, 2, 31, 0)]:
        assert ds.train_images[i, c, h, w] == flat[i, c * 1024 + h * 32 + w]
    assert ds.num_classes == classes
    assert ds.mean == pytest.approx(CIFAR_MEAN) and ds.std == pytest.approx(CIFAR_STD)
    assert ds.augment is True
    assert offline == []  # everything came from the files


def test_load_svhn(tmp_path, monkeypatch, offline):
    written = write_svhn(str(tmp_path))
    split_list = {split: [url, filename, calculate_md5(tmp_path / filename)]
                  for split, (url, filename, _) in datasets.SVHN.split_list.items()}
    monkeypatch.setattr(datasets.SVHN, 'split_list', split_list)
    ds = load_dataset('svhn', str(tmp_path))
    train_images = np.concatenate([written['train'][0], written['extra'][0]])
    train_digits = np.concatenate([written['train'][1], written['extra'][1]])
    check_split(ds.train_images, ds.train_labels, train_images, train_digits)
    check_split(ds.test_images, ds.test_labels, *written['test'])
    assert ds.train_labels[0] == 0 and ds.train_labels.max() <= 9  # stored as 10
    assert ds.num_classes == 10
    assert ds.mean == pytest.approx((0.5,) * 3) and ds.std == pytest.approx((0.2,) * 3)
    assert ds.augment is False
    assert offline == []


def check_fashion(ds, written):
    for split, images, labels in (('train', ds.train_images, ds.train_labels),
                                  ('t10k', ds.test_images, ds.test_labels)):
        grey, digits = written[split]
        n = len(grey)
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
        assert torch.equal(images[:, 0, 2:30, 2:30], torch.from_numpy(grey))
        border = images[:, 0].clone()
        border[:, 2:30, 2:30] = 0
        assert border.sum() == 0  # 2 pixels of zero padding all round
        assert torch.equal(labels, torch.from_numpy(digits.astype(np.int64)))
    assert ds.num_classes == 10 and len(ds.mean) == 3 and len(ds.std) == 3


def test_load_fashion_mnist(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'no-debian-here'))
    written = write_fashion_mnist(str(tmp_path), num_train=40, num_test=20)
    check_fashion(load_dataset('fashionmnist', str(tmp_path)), written)
    assert offline == []


def test_load_fashion_mnist_from_debian_layout(tmp_path, monkeypatch, offline):
    staged, debian, root = tmp_path / 'staged', tmp_path / 'debian', tmp_path / 'root'
    written = write_fashion_mnist(str(staged), num_train=30, num_test=10, seed=3)
    debian.mkdir()
    for name in data.FASHION_FILES:
        with open(staged / 'FashionMNIST' / 'raw' / name, 'rb') as src, \
                gzip.open(debian / (name + '.gz'), 'wb') as dst:
            shutil.copyfileobj(src, dst)
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(debian))
    check_fashion(load_dataset('fashionmnist', str(root)), written)
    raw = root / 'FashionMNIST' / 'raw'
    assert sorted(os.listdir(raw)) == sorted(FASHION_FILES)  # gunzipped, no temporary left
    for name in FASHION_FILES:
        assert (raw / name).read_bytes() == (staged / 'FashionMNIST' / 'raw' / name).read_bytes()
    assert offline == []


@pytest.mark.skipif(not all(os.path.exists(os.path.join(DEBIAN, f + '.gz')) for f in FASHION_FILES),
                    reason='dataset-fashion-mnist is not installed')
def test_real_fashion_mnist(tmp_path, offline):
    ds = load_dataset('fashionmnist', str(tmp_path))
    assert ds.train_images.shape == (60000, 3, 32, 32)
    assert ds.test_images.shape == (10000, 3, 32, 32)
    assert ds.train_labels.bincount().tolist() == [6000] * 10
    assert ds.test_labels.bincount().tolist() == [1000] * 10
    assert ds.train_images[:, :, :2].sum() == 0 and ds.train_images.max() == 255
    assert offline == []


# --- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['cifar10', 'cifar100', 'svhn', 'fashionmnist'])
def test_missing_dataset_is_a_user_error(name, tmp_path, monkeypatch, offline):
    monkeypatch.setattr(data, 'DEBIAN_FASHION_MNIST', str(tmp_path / 'no-debian-here'))
    root = tmp_path / 'empty'
    root.mkdir()
    with pytest.raises(UserError) as info:
        load_dataset(name, str(root))
    message = str(info.value)
    assert name in message and str(root) in message
    assert '\n' not in message
    assert offline  # it did try to download, and that failed


@pytest.mark.parametrize('matching_md5', [True, False], ids=['parse-error', 'md5-mismatch'])
def test_corrupt_cifar_is_a_user_error(matching_md5, tmp_path, monkeypatch, offline):
    write_cifar10(str(tmp_path))
    folder = tmp_path / 'cifar-10-batches-py'
    (folder / 'data_batch_3').write_bytes(b'this is not a pickle' * 50)
    if matching_md5:  # torchvision accepts the file, then fails to parse it
        md5s_of(monkeypatch, datasets.CIFAR10, folder)
    with pytest.raises(UserError) as info:
        load_dataset('cifar10', str(tmp_path))
    assert 'cifar10' in str(info.value) and str(tmp_path) in str(info.value)


def test_unknown_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match='imagenet') as info:
        load_dataset('imagenet', str(tmp_path))
    assert 'cifar10' in str(info.value)  # it lists the choices

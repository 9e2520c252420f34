"""Datasets as uint8 tensors on the training device, batched and augmented there.

Each split is loaded once through torchvision into a (N, 3, 32, 32) uint8 tensor. The
order of an epoch and its random crops and flips are a pure function of (seed, epoch),
so a resumed run, or any rank of a distributed run, reproduces them without saved state.
"""
import gzip
import hashlib
import os
import pickle
import shutil
import socket
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from .errors import UserError

# The original normalises CIFAR-100 with CIFAR-10's statistics; we keep that choice.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# Statistics of the 28x28 Fashion-MNIST training images, repeated over 3 channels.
FASHION_MEAN, FASHION_STD = (0.2860,) * 3, (0.3530,) * 3
# Where Debian's package dataset-fashion-mnist puts the gzipped idx files; the environment
# variable ONE_DEBIAN_FASHION_MNIST names another folder holding the same four .gz files.
DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
DEBIAN_FASHION_MNIST_ENV = 'ONE_DEBIAN_FASHION_MNIST'
FASHION_FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
                 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')
# Accepts a CIFAR copy whose checksums are not the official release's (utils/cli.py).
UNOFFICIAL_FLAG = '--unofficial-data'
READ_CHUNK = 1 << 22   # bytes read at a time while hashing a copy


@dataclass
class Dataset:
    train_images: torch.Tensor  # (N, 3, 32, 32) uint8
    train_labels: torch.Tensor  # (N,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple
    std: tuple
    augment: bool  # random crop (padding 4) + horizontal flip on the training split
    copy: dict = None  # CIFAR: which copy of the files was read (cifar_copy; args.json data_copy)


def _labels(values):
    return torch.as_tensor(values, dtype=torch.int64)


def _cifar_class(num_classes):
    return datasets.CIFAR10 if num_classes == 10 else datasets.CIFAR100


def _cifar_files(cls, root):
    """[(path, official md5)] of the training then test files, in torchvision's order."""
    folder = os.path.join(root, cls.base_folder)
    return [(os.path.join(folder, name), md5) for name, md5 in cls.train_list + cls.test_list]


def cifar_copy(files):
    """Which copy of CIFAR FILES are: {'official': every md5 is the release's, 'sha256': of
    the files' bytes one after the other}, so `cat FILES | sha256sum` gives the same digest.
    One read of each file computes both."""
    whole, official = hashlib.sha256(), True
    for path, md5 in files:
        own = hashlib.md5(usedforsecurity=False)
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(READ_CHUNK), b''):
                whole.update(chunk)
                own.update(chunk)
        official = official and own.hexdigest() == md5
    return {'official': official, 'sha256': whole.hexdigest()}


def _read_cifar_split(paths, num_classes):
    """Images (N, 3, 32, 32) uint8 and labels of torchvision's python batches: each a pickle
    whose 'data' rows hold an image's R, G and B planes, with 'labels' (CIFAR-10) or
    'fine_labels' (CIFAR-100). Checked, since a copy may come from anywhere."""
    images, labels = [], []
    for path in paths:
        with open(path, 'rb') as f:
            entry = pickle.load(f, encoding='latin1')
        images.append(np.asarray(entry['data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
        batch = entry['labels'] if 'labels' in entry else entry['fine_labels']
        if len(batch) != len(images[-1]) or not all(0 <= y < num_classes for y in batch):
            raise ValueError(f'{os.path.basename(path)} holds {len(images[-1])} images and '
                             f'{len(batch)} labels, which must be {num_classes} classes')
        labels += batch
    return torch.from_numpy(np.concatenate(images)), _labels(labels)


def _load_cifar(root, num_classes, unofficial=False):
    """CIFAR from torchvision's python files in ROOT (downloaded by torchvision when they are
    not all there). A complete copy that is not the official release (rebuilt, re-packaged)
    is read only with --unofficial-data; torchvision would download over it."""
    cls = _cifar_class(num_classes)
    files = _cifar_files(cls, root)
    if not all(os.path.isfile(path) for path, _ in files):
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    copy = cifar_copy(files)
    if not copy['official'] and not unofficial:
        raise UserError(
            f'cifar{num_classes}: {os.path.join(root, cls.base_folder)!r} is not the official '
            f"release (its checksums differ from torchvision's list): pass {UNOFFICIAL_FLAG} to "
            f'train on this copy (sha256 {copy["sha256"][:12]}..., then recorded in args.json), '
            'or put the official files there')
    paths = [path for path, _ in files]
    train, test = paths[:len(cls.train_list)], paths[len(cls.train_list):]
    return Dataset(*_read_cifar_split(train, num_classes), *_read_cifar_split(test, num_classes),
                   num_classes, CIFAR_MEAN, CIFAR_STD, augment=True, copy=copy)


def _load_svhn(root):
    train, extra, test = (datasets.SVHN(root, split=s, download=True)
                          for s in ('train', 'extra', 'test'))
    return Dataset(torch.cat([torch.from_numpy(train.data), torch.from_numpy(extra.data)]),
                   torch.cat([_labels(train.labels), _labels(extra.labels)]),
                   torch.from_numpy(test.data).contiguous(), _labels(test.labels),
                   10, (0.5,) * 3, (0.2,) * 3, augment=False)


def _install_debian_fashion_mnist(root):
    """Gunzip Debian's copy into torchvision's layout (its md5 sums differ from torchvision's
    list, so torchvision's own download would go to the network instead).

    Each file goes through a temporary name of this host and process, then a rename, so
    processes that prepare the same folder at once never disturb each other's files (under
    torchrun only one rank per folder prepares it: see World.in_turn)."""
    debian = os.environ.get(DEBIAN_FASHION_MNIST_ENV) or DEBIAN_FASHION_MNIST
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    if all(os.path.exists(os.path.join(raw, f)) for f in FASHION_FILES):
        return
    if not all(os.path.exists(os.path.join(debian, f + '.gz')) for f in FASHION_FILES):
        return
    os.makedirs(raw, exist_ok=True)
    for name in FASHION_FILES:
        tmp = os.path.join(raw, f'{name}.{socket.gethostname()}-{os.getpid()}.tmp')
        try:
            with gzip.open(os.path.join(debian, name + '.gz'), 'rb') as src, \
                    open(tmp, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, os.path.join(raw, name))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _grey28_to_rgb32(images):
    """(N, 28, 28) -> (N, 3, 32, 32): zero-pad 2 pixels a side, repeat over 3 channels."""
    return F.pad(images, (2, 2, 2, 2)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def _load_fashion_mnist(root):
    _install_debian_fashion_mnist(root)
    train, test = (datasets.FashionMNIST(root, train=split, download=True) for split in (True, False))
    return Dataset(_grey28_to_rgb32(train.data), train.targets.long(),
                   _grey28_to_rgb32(test.data), test.targets.long(),
                   10, FASHION_MEAN, FASHION_STD, augment=True)


LOADERS = {
    'cifar10': lambda root, unofficial: _load_cifar(root, 10, unofficial),
    'cifar100': lambda root, unofficial: _load_cifar(root, 100, unofficial),
    'svhn': lambda root, unofficial: _load_svhn(root),
    'fashionmnist': lambda root, unofficial: _load_fashion_mnist(root),
}
UNOFFICIAL_COPIES = ('cifar10', 'cifar100')   # the datasets --unofficial-data applies to
WHERE_TO_GET = {
    'cifar10': 'cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, '
               'extracted (cifar-10-batches-py/)',
    'cifar100': 'cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, '
                'extracted (cifar-100-python/)',
    'svhn': '{train,test,extra}_32x32.mat from http://ufldl.stanford.edu/housenumbers/',
    'fashionmnist': 'the four idx files, gunzipped, in FashionMNIST/raw/ '
                    '(or run: apt-get install dataset-fashion-mnist)',
}


def load_dataset(name, root, unofficial=False):
    """Load (downloading through torchvision when absent) a dataset as uint8 tensors;
    `unofficial`: accept a CIFAR copy whose checksums are not the official release's."""
    if name not in LOADERS:
        raise UserError(f'unknown dataset {name!r}; choose from {", ".join(LOADERS)}')
    try:
        return LOADERS[name](root, unofficial)
    # torchvision: URLError (an OSError) when offline, RuntimeError for missing or corrupt
    # files; the readers: UnpicklingError, EOFError, ValueError, KeyError on garbage, and
    # AssertionError (with no message) from the idx reader's header checks (MNIST formats);
    # TypeError from a pickle that holds no dict.
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, TypeError,
            pickle.UnpicklingError, AssertionError) as e:
        reason = ' '.join(str(e).split()) or (
            'a file there is not in the expected format' if isinstance(e, AssertionError)
            else type(e).__name__)
        raise UserError(f'{name} is missing or corrupt in {root!r} and could not be downloaded '
                        f'({reason}); put {WHERE_TO_GET[name]} into {root!r}') from None


def epoch_plan(num_images, seed, epoch, shuffle, augment, views=1):
    """The order of an epoch and, for each of `views` views, each position's crop offsets
    (views, N, 2) and flip (views, N), from (seed, epoch). View 0 is drawn first, so a
    loader of one view draws exactly what it always has."""
    generator = torch.Generator().manual_seed((seed << 20) + epoch)
    order = torch.randperm(num_images, generator=generator) if shuffle else torch.arange(num_images)
    if not augment:
        return order, None, None
    offsets, flips = [], []
    for _ in range(views):
        offsets.append(torch.randint(0, 9, (num_images, 2), generator=generator))
        flips.append(torch.rand(num_images, generator=generator) < 0.5)
    return order, torch.stack(offsets), torch.stack(flips)


def crop_and_flip(images, offsets, flips, padding=4):
    """For each uint8 image (C, H, W): crop an HxW window at `offsets` (row, col) of the image
    zero-padded by `padding`, then mirror it left-right where `flips` is set. Returns a
    (B, C, H, W) view laid out channels-last."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device).expand(batch, -1)
    cols = offsets[:, 1:] + torch.where(flips[:, None], width - 1 - cols, cols)
    picked = padded[torch.arange(batch, device=images.device)[:, None, None], :,
                    rows[:, :, None], cols[:, None, :]]            # (B, H, W, C)
    return picked.permute(0, 3, 1, 2)


class Normalize:
    """uint8 images (B, C, H, W) on the device -> float32 (x / 255 - mean) / std, laid out in
    `memory_format`: the last step of every loader, run on the device."""

    def __init__(self, mean, std, device, memory_format=torch.contiguous_format):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # A tensor divisor: CUDA divides by a Python number by multiplying by its reciprocal,
        # 1 ulp off x / 255 (the CPU's and torchvision's value) for about half the values.
        self.scale = torch.full((), 255.0, device=device)
        self.memory_format = memory_format

    def __call__(self, images):
        images = images.contiguous(memory_format=self.memory_format)
        return images.float().div_(self.scale).sub_(self.mean).div_(self.std)


class DeviceLoader:
    """Mini-batches of one split, built on the split's device with tensor operations.

    Same pixels as torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip +
    ToTensor + Normalize. `batch_size` is the global batch; with `world_size` > 1 each rank
    gets its contiguous share of every global batch (the last, partial batch is kept).
    With `views` > 1 (KDCL's input distortion) the images of a batch are (views, B, C, H, W):
    the same images, each view with its own crops and flips.
    """

    skipped = ()   # images left out of batches: none, all are in memory (as FolderLoader's)

    def __init__(self, images, labels, mean, std, batch_size, *, shuffle, augment, seed=0,
                 rank=0, world_size=1, memory_format=torch.contiguous_format, views=1):
        self.images, self.labels, self.device = images, labels, images.device
        self.normalize = Normalize(mean, std, images.device, memory_format)
        self.batch_size, self.shuffle, self.augment, self.seed = batch_size, shuffle, augment, seed
        self.rank, self.world_size, self.views = rank, world_size, views

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def batches(self, epoch=0, start=0):
        """Yield (images, labels) of this rank for global batches start, start+1, ..."""
        for images, labels in self.seeds_batches([self.seed], epoch, start):
            yield images[0], labels[0]

    def seeds_batches(self, seeds, epoch=0, start=0):
        """batches() of this loader under each seed of SEEDS (a pack's runs: each its own
        order, crops and flips), built at once and stacked: images (k, B, ...), labels (k, B);
        every member's exactly what the loader of its seed alone gives."""
        device = self.images.device
        plans = [epoch_plan(len(self.labels), seed, epoch, self.shuffle, self.augment,
                            self.views) for seed in seeds]
        order = torch.stack([plan[0] for plan in plans]).to(device)            # (k, N)
        if self.augment:
            offsets = torch.stack([plan[1] for plan in plans]).to(device)      # (k, V, N, 2)
            flips = torch.stack([plan[2] for plan in plans]).to(device)        # (k, V, N)
        members, count = order.shape
        for first in range(start * self.batch_size, count, self.batch_size):
            positions = torch.arange(first, min(first + self.batch_size, count), device=device)
            positions = positions.tensor_split(self.world_size)[self.rank]
            index = order[:, positions]                                        # (k, B)
            # every view's copy of every member's images, in (k, V, B) order
            images = self.images[index[:, None].expand(-1, self.views, -1).flatten()]
            if self.augment:
                images = crop_and_flip(images, offsets[:, :, positions].flatten(0, 2),
                                       flips[:, :, positions].flatten())
            images = self.normalize(images).unflatten(0, (members, self.views, -1))
            yield images if self.views > 1 else images.squeeze(1), self.labels[index]


def rank_share(images, labels, rank, world_size):
    """This rank's contiguous share of a split, for evaluation that counts every image once."""
    index = torch.arange(len(labels)).tensor_split(world_size)[rank]
    return images[index], labels[index]

"""ImageNet from folders of JPEG files, decoded by DataLoader worker processes.

The layout is torchvision's ImageFolder (as pytorch/examples' ImageNet script expects):
DIR/train/CLASS/*.JPEG and DIR/val/CLASS/*.JPEG, the same class folders in both. Training
images get RandomResizedCrop(size) and a horizontal flip; evaluation images Resize(size *
256 / 224) and CenterCrop(size), the standard ImageNet protocol at size 224. Workers decode with
Pillow (ImageFolder's own loader: every format ImageNet's files come in, greyscale and CMYK
converted to RGB), then crop and resize uint8 tensors, which they send in pinned memory; the
normalisation runs on the device, as for the CIFAR-sized datasets (utils/data.py). Measured on
one core of the 2-core development VM (500x375 JPEGs, 224 crops): Pillow decode + tensor
transforms 292-359 images/s, Pillow decode + the same transforms on PIL images 206-208,
torchvision.io.decode_image + tensor transforms 371-375, but torchvision 0.29 deprecates its
decoders in favour of TorchCodec (docs/IMAGENET.md).

An epoch's order and every image's crop and flip are a pure function of (seed, epoch): each
image is transformed under its own seed, drawn with the order, so neither the worker that
decodes it nor the number of workers changes a pixel, and a run resumed mid-epoch at the exact
batch, or any torchrun rank, sees what an uninterrupted run would. Each global batch is split
into contiguous rank shares, as DeviceLoader does.

An image that cannot be read (corrupt, truncated, not an image) never raises in a worker:
the worker reports its path, and the loader stops the run naming it (--bad-images stop) or
leaves it out of its batch and counts it (--bad-images skip).
"""
import hashlib
import os

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension
from torchvision.transforms import v2

from .data import Normalize
from .errors import UserError

IMAGENET = 'imagenet'   # the --dataset name
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ('train', 'val')
BAD_IMAGES = ('stop', 'skip')
LAYOUT = 'DIR/train/CLASS/*.JPEG and DIR/val/CLASS/*.JPEG (see docs/IMAGENET.md)'


class UnreadableImage(UserError):
    """An image a worker could not decode, under --bad-images stop."""


def class_folders(root, split):
    """The class folders of a split, sorted (torchvision's find_classes)."""
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise UserError(f'--data-dir {root}: there is no {split}/ folder; lay ImageNet out as '
                        f'{LAYOUT}')
    try:
        return find_classes(path)[0]
    except FileNotFoundError:
        raise UserError(f'--data-dir {root}: {split}/ holds no class folder; lay ImageNet out '
                        f'as {LAYOUT}') from None


class Listing:
    """Both splits' image files, each listed once and under one class.

    Symbolic links are followed, as ImageFolder follows them: a split, a class folder, a
    folder inside one or an image may be a link (a subset of ILSVRC made of links to it
    works). But every real folder is entered once and every image file is listed once: a link
    that leads to a folder listed already (a loop such as `ln -s .. train/n0/loop`, another
    class's folder, a split) or to an image listed already is refused in one line naming it.
    os.walk, which make_dataset uses, follows a loop until the path grows too long, listing
    every class's images again under the class holding the link. The two splits share the
    rule: a validation image cannot be a training image too. Hard links are not looked for."""

    def __init__(self, root):
        self.root = root
        self.folders = {}   # real path -> the path it is listed under
        self.links = {}     # real path of an image a file link leads to -> that link

    def shown(self, path):
        return os.path.relpath(path, self.root)

    def refuse(self, first, second, kind):
        raise UserError(f'--data-dir {self.root}: {self.shown(first)} and {self.shown(second)} '
                        f'are one {kind} under two names (a symbolic link leads back to it, or '
                        'to something listed already): an image must be listed once, under one '
                        'class; remove the link')

    def enter(self, path, real=None):
        """Take folder PATH, or refuse a second path to one real folder."""
        first = self.folders.setdefault(real or os.path.realpath(path), path)
        if first != path:
            self.refuse(first, path, 'folder')

    def entries(self, folder):
        try:
            with os.scandir(folder) as found:
                return list(found)
        except OSError as e:
            raise UserError(f'--data-dir {self.root}: cannot list {self.shown(folder)}: '
                            f'{e.strerror or e}') from None

    def images(self, folder):
        """The image files under FOLDER (entered already), in make_dataset's order: folders
        sorted by path, the files of each by name."""
        found, pending = [], [(folder, os.path.realpath(folder))]
        while pending:
            path, real = pending.pop()
            files = []
            for entry in self.entries(path):
                if is_folder(entry):
                    inner = (os.path.realpath(entry.path) if entry.is_symlink()
                             else os.path.join(real, entry.name))
                    self.enter(entry.path, inner)
                    pending.append((entry.path, inner))
                elif has_file_allowed_extension(entry.name, IMG_EXTENSIONS):
                    if entry.is_symlink():
                        self.link(entry.path)
                    files.append(entry.path)
            found.append((path, sorted(files)))
        return [path for _, files in sorted(found) for path in files]

    def link(self, path):
        target = os.path.realpath(path)
        first = self.links.setdefault(target, path)
        if first != path:
            self.refuse(first, path, 'image')

    def check_links(self):
        """Once every folder is listed: no file link may lead to an image listed in one."""
        for target, link in self.links.items():
            folder = self.folders.get(os.path.dirname(target))
            if (folder is not None and os.path.isfile(target)
                    and has_file_allowed_extension(target, IMG_EXTENSIONS)):
                self.refuse(os.path.join(folder, os.path.basename(target)), link, 'image')


def is_folder(entry):
    try:
        return entry.is_dir()
    except OSError:   # a link that cannot be followed: listed as a file, as os.walk does
        return False


def scan(root):
    """{split: [(path, class index)]} (in the order of torchvision's make_dataset, as
    ImageFolder lists them) and the class names, after checking the layout: both splits
    present, the same classes, no class folder without images, no image listed twice
    (Listing)."""
    classes = {split: class_folders(root, split) for split in SPLITS}
    if classes['train'] != classes['val']:
        only_train = sorted(set(classes['train']) - set(classes['val']))
        only_val = sorted(set(classes['val']) - set(classes['train']))
        where = (f'{only_train[0]} is in train/ only' if only_train
                 else f'{only_val[0]} is in val/ only')
        raise UserError(f'--data-dir {root}: train/ and val/ have different class folders '
                        f'({len(only_train)} in train/ only, {len(only_val)} in val/ only; '
                        f'{where})')
    listing = Listing(root)
    folders = [os.path.join(root, split, name) for split in SPLITS
               for name in [''] + classes[split]]
    for folder in folders:  # first, so that a link to any of them is caught
        listing.enter(folder.rstrip(os.sep))
    samples = {split: [] for split in SPLITS}
    for split in SPLITS:
        for index, name in enumerate(classes['train']):
            images = listing.images(os.path.join(root, split, name))
            if not images:
                raise UserError(f'--data-dir {root}: {split}/{name} holds no image '
                                f'({", ".join(IMG_EXTENSIONS)})')
            samples[split] += [(path, index) for path in images]
    listing.check_links()
    return samples, classes['train']


def listing_record(samples, folder):
    """What a run records of the images it trains or is tested on: their count and a digest
    of every image's path (relative to FOLDER, so the data may move) and class."""
    digest = hashlib.sha256()
    for path, target in samples:
        digest.update(f'{path[len(folder) + 1:]}\t{target}\n'.encode())
    return {'images': len(samples), 'sha256': digest.hexdigest()}


def listing_records(samples, root):
    """{split: listing_record} of SAMPLES ({split: [(path, class)]}) under data folder ROOT."""
    return {split: listing_record(samples[split], os.path.join(root, split)) for split in SPLITS}


def train_transform(size):
    return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])


def eval_transform(size):
    return v2.Compose([v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)])


class SeededImages(torch.utils.data.Dataset):
    """Item (index, seed): the image decoded and transformed under torch.manual_seed(seed),
    as (uint8 tensor (3, size, size), class, ''), or (None, class, path) if it cannot be read."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key
        path, target = self.samples[index]
        try:
            with open(path, 'rb') as f:
                image = v2.functional.pil_to_tensor(Image.open(f).convert('RGB'))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None, target, path   # unreadable, truncated, not an image
        torch.manual_seed(seed)
        return self.transform(image).contiguous(), target, ''


def collate(items):
    """(images (B, 3, H, W) uint8 or None, targets (B,), paths of the unreadable images)."""
    good = [(image, target) for image, target, bad in items if not bad]
    images = torch.stack([image for image, _ in good]) if good else None
    targets = torch.tensor([target for _, target in good], dtype=torch.int64)
    return images, targets, [bad for _, _, bad in items if bad]


def epoch_keys(num_images, seed, epoch, shuffle):
    """The order of an epoch and each position's transform seed, from (seed, epoch)."""
    generator = torch.Generator().manual_seed((seed << 20) + epoch)
    order = torch.randperm(num_images, generator=generator) if shuffle else torch.arange(num_images)
    seeds = torch.randint(0, 2 ** 62, (num_images,), generator=generator)
    return order, seeds


class FolderLoader:
    """Mini-batches of one split's images, decoded by `workers` processes; the interface of
    utils.data.DeviceLoader (batches(epoch, start), labels, device, len)."""

    def __init__(self, samples, transform, mean, std, batch_size, *, shuffle, device,
                 workers, bad_images='stop', seed=0, rank=0, world_size=1,
                 memory_format=torch.contiguous_format):
        self.dataset = SeededImages(samples, transform)
        self.labels = torch.tensor([target for _, target in samples], dtype=torch.int64)
        self.device, self.workers, self.bad_images = device, workers, bad_images
        self.normalize = Normalize(mean, std, device, memory_format)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.skipped = []   # paths left out under --bad-images skip, this process

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def rank_batches(self, epoch, start):
        """[[(index, seed)] of this rank] for global batches start, start+1, ..."""
        order, seeds = epoch_keys(len(self.labels), self.seed, epoch, self.shuffle)
        batches = []
        for first in range(start * self.batch_size, len(order), self.batch_size):
            positions = torch.arange(first, min(first + self.batch_size, len(order)))
            share = positions.tensor_split(self.world_size)[self.rank]
            batches.append(list(zip(order[share].tolist(), seeds[share].tolist())))
        return batches

    def batches(self, epoch=0, start=0):
        """Yield (images, labels) of this rank on the device for global batches start, ..."""
        loader = DataLoader(self.dataset, batch_sampler=self.rank_batches(epoch, start),
                            num_workers=self.workers, collate_fn=collate,
                            pin_memory=self.device.type == 'cuda',
                            persistent_workers=False)
        for images, targets, unreadable in loader:
            if unreadable:
                self.unreadable(unreadable, everything=images is None)
            yield (self.normalize(images.to(self.device, non_blocking=True)),
                   targets.to(self.device, non_blocking=True))

    def unreadable(self, paths, everything):
        """Stop naming the first image (--bad-images stop, or a batch share with no image
        left), or count them (skip)."""
        if self.bad_images == 'stop' or everything:
            hint = ('no image of the batch was left to train on' if self.bad_images == 'skip'
                    else 'replace it by a readable image of the same name, or pass --bad-images '
                         'skip to leave such images out and count them (a run continues only '
                         'over the images it started with: removing one changes them)')
            raise UnreadableImage(f'cannot read image {paths[0]} (corrupt, truncated or not an '
                                  f'image; {len(paths)} in this batch); {hint}')
        self.skipped += paths


def load_image_folder(args, device, world):
    """(num_classes, train loader, this rank's share of the val loader, val images in all,
    the listing_record of each split) for --dataset imagenet."""
    samples, classes = scan(args.data_dir)
    train_samples = samples['train'][:args.train_subset or None]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    common = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, device=device, workers=args.workers,
                  bad_images=args.bad_images, memory_format=memory_format)
    train = FolderLoader(train_samples, train_transform(args.image_size), batch_size=args.train_batch,
                         shuffle=True, rank=world.rank, world_size=world.size, **common)
    share = torch.arange(len(samples['val'])).tensor_split(world.size)[world.rank].tolist()
    test = FolderLoader([samples['val'][i] for i in share], eval_transform(args.image_size),
                        batch_size=args.test_batch, shuffle=False, **common)
    listing = listing_records({'train': train_samples, 'val': samples['val']}, args.data_dir)
    return len(classes), train, test, len(samples['val']), listing


def check_same_images(saved, listing, path, data_dir):
    """Refuse to continue checkpoint PATH (its listing_records: SAVED) over other images than
    it was trained and tested on: an epoch's order is a permutation of the list, so even one
    image removed would continue mid-epoch over another order, and the history would mix
    two datasets. Checkpoints saved before listings were recorded are not checked."""
    if not saved or not listing:
        return
    for split in SPLITS:
        then, now = saved.get(split), listing[split]
        if then is None or then == now:
            continue
        what = (f'{then["images"]} {split} images then, {now["images"]} now'
                if then['images'] != now['images'] else
                f'as many {split} images, but other names or classes')
        raise UserError(f'{path!r} was trained over other images than --data-dir {data_dir} '
                        f'lists now ({what}): a run continues only over the images it started '
                        'with. Put the folder back as it was (an unreadable image: replace it '
                        'by a readable one of the same name, or resume with --bad-images skip '
                        f'to leave it out), or start a new run from its weights with '
                        f'--init-from {path} -c NEW_FOLDER')

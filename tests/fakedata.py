"""Small datasets written in the real on-disk formats torchvision reads."""
import os
import pickle
import struct

import numpy as np


def write_idx(path, array):
    """An idx file (the MNIST format): magic (0, 0, 0x08 = uint8, ndim), big-endian sizes, data."""
    with open(path, 'wb') as f:
        f.write(struct.pack('>BBBB', 0, 0, 0x08, array.ndim))
        f.write(struct.pack(f'>{array.ndim}I', *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fashion_mnist(root, num_train=256, num_test=100, seed=0):
    """FashionMNIST/raw/ under root with learnable images: class k is brighter in row band k."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, 'FashionMNIST', 'raw')
    os.makedirs(raw, exist_ok=True)
    arrays = {}
    for split, n in (('train', num_train), ('t10k', num_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 250
        write_idx(os.path.join(raw, f'{split}-images-idx3-ubyte'), images)
        write_idx(os.path.join(raw, f'{split}-labels-idx1-ubyte'), labels)
        arrays[split] = (images, labels)
    return arrays


def random_images(rng, n):
    """n random RGB images as uint8 (n, 3, 32, 32), channel-first like the tensors we load."""
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _write_pickle(path, obj):
    # The real archives are Python 2 pickles; protocol 2 is what they use.
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_batch(images, labels, label_key):
    """A CIFAR python batch: 'data' is (N, 3072) uint8, each row one image's R, G, B planes
    in row-major order (so row i reshaped to (3, 32, 32) is image i, channel-first)."""
    return {'batch_label': 'fake batch', label_key: [int(v) for v in labels],
            'data': images.reshape(len(images), 3 * 32 * 32),
            'filenames': [f'fake_{i}.png' for i in range(len(images))]}


def write_cifar10(root, per_batch=6, num_test=10, seed=0):
    """cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) under root.
    Returns {'train': (images, labels), 'test': (images, labels)}, train in file order."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-batches-py')
    os.makedirs(folder, exist_ok=True)
    train_images, train_labels = [], []
    for k in range(1, 6):
        images, labels = random_images(rng, per_batch), rng.integers(0, 10, per_batch)
        _write_pickle(os.path.join(folder, f'data_batch_{k}'), _cifar_batch(images, labels, 'labels'))
        train_images.append(images)
        train_labels.append(labels)
    test = random_images(rng, num_test), rng.integers(0, 10, num_test)
    _write_pickle(os.path.join(folder, 'test_batch'), _cifar_batch(*test, 'labels'))
    _write_pickle(os.path.join(folder, 'batches.meta'),
                  {'label_names': [f'class{i}' for i in range(10)],
                   'num_cases_per_batch': per_batch, 'num_vis': 3072})
    return {'train': (np.concatenate(train_images), np.concatenate(train_labels)), 'test': test}


def write_cifar100(root, num_train=30, num_test=10, seed=0):
    """cifar-100-python/ (train, test, meta) under root; labels are the 100 fine labels."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    arrays = {}
    for split, n in (('train', num_train), ('test', num_test)):
        images, labels = random_images(rng, n), rng.integers(0, 100, n)
        batch = _cifar_batch(images, labels, 'fine_labels')
        batch['coarse_labels'] = [int(v) // 5 for v in labels]
        _write_pickle(os.path.join(folder, split), batch)
        arrays[split] = (images, labels)
    _write_pickle(os.path.join(folder, 'meta'),
                  {'fine_label_names': [f'fine{i}' for i in range(100)],
                   'coarse_label_names': [f'coarse{i}' for i in range(20)]})
    return arrays


def write_svhn(root, sizes=(('train', 7), ('test', 4), ('extra', 5)), seed=0):
    """{train,test,extra}_32x32.mat under root: X is (32, 32, 3, N) uint8 (row, col, channel,
    image) and y is (N, 1) with the digit 0 stored as 10. Returns split -> (images, digits)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    arrays = {}
    for split, n in sizes:
        images, digits = random_images(rng, n), rng.integers(0, 10, n)
        digits[0] = 0  # make sure the 0 -> 10 convention is exercised
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(os.path.join(root, f'{split}_32x32.mat'),
                         {'X': np.ascontiguousarray(images.transpose(2, 3, 1, 0)), 'y': stored})
        arrays[split] = (images, digits)
    return arrays


def write_image_folder(root, classes=6, train_per_class=8, val_per_class=3, size=(56, 48),
                       seed=0):
    """ImageNet's layout under root: train/ and val/, one folder per class (n0000000k), real
    JPEG files of varied sizes. Class k has a bright band at height k / classes, so that a few
    steps learn something."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for split, per_class in (('train', train_per_class), ('val', val_per_class)):
        for k in range(classes):
            folder = os.path.join(root, split, f'n{k:08d}')
            os.makedirs(folder, exist_ok=True)
            for i in range(per_class):
                width, height = size[0] + int(rng.integers(0, 9)), size[1] + int(rng.integers(0, 9))
                pixels = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
                band = height * k // classes
                pixels[band:band + max(2, height // classes), :, :] = 240
                Image.fromarray(pixels).save(os.path.join(folder, f'{split}_{k}_{i}.JPEG'),
                                             quality=90)
    return root


def not_checkpoints(checkpoint):
    """{kind: bytes} of files a checkpoint's path may hold instead of one, given the bytes of a
    real CHECKPOINT: damaged, another program's, or torch's but not a checkpoint of this
    project (no format, no weights)."""
    import io
    import zipfile

    import torch

    def saved(obj):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    numpy_file, zip_file = io.BytesIO(), io.BytesIO()
    np.save(numpy_file, np.zeros(3))
    with zipfile.ZipFile(zip_file, 'w') as archive:
        archive.writestr('notes/a.txt', 'not a checkpoint')
    found = {'empty': b'', 'garbage': np.random.default_rng(0).bytes(4096),
             'truncated': checkpoint[:len(checkpoint) // 2], 'text': b'{"epoch": 3}\n',
             'numpy': numpy_file.getvalue(), 'zip': zip_file.getvalue(),
             'tensor': saved(torch.zeros(3)), 'no format': saved({'epoch': 3}),
             'no weights': saved({'format': 1, 'epoch': 3, 'method': 'one'})}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):   # a plain pickle of a checkpoint-like dict
        found[f'pickle {protocol}'] = pickle.dumps({'format': 1, 'epoch': 3}, protocol=protocol)
    return found

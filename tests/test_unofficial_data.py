"""--unofficial-data: a copy of CIFAR whose checksums are not the official release's (rebuilt,
re-packaged) is refused in one line naming the flag, and nothing is downloaded over it; with
the flag it is read, said in one warning line and recorded in args.json (data_copy: its
sha256), and a run never continues on another copy. (report.py's marking: test_report.py.)"""
import hashlib
import json
import os
import pickle
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from torchvision import datasets
from torchvision.datasets.utils import calculate_md5

import cifar_baseline
from conftest import ROOT
from fakedata import write_cifar10, write_cifar100
from utils.data import load_dataset
from utils.errors import UserError

FLAG = '--unofficial-data'
LAYOUT = {'cifar10': (datasets.CIFAR10, write_cifar10, 'cifar-10-batches-py'),
          'cifar100': (datasets.CIFAR100, write_cifar100, 'cifar-100-python')}


@pytest.fixture
def no_network(monkeypatch):
    """Every URL fails at once; the list holds those tried."""
    tried = []

    def urlopen(request, *args, **kwargs):
        tried.append(getattr(request, 'full_url', request))
        raise urllib.error.URLError('network disabled by the test')

    monkeypatch.setattr(urllib.request, 'urlopen', urlopen)
    return tried


def data_files(name, root):
    cls, _, folder = LAYOUT[name]
    return [os.path.join(root, folder, f) for f, _ in cls.train_list + cls.test_list]


def sha256_of(paths):
    """What `cat PATHS | sha256sum` prints."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()


def make_official(monkeypatch, name, root):
    """torchvision's list of checksums, pointed at the files written here."""
    cls, _, folder = LAYOUT[name]
    md5 = lambda f: calculate_md5(os.path.join(root, folder, f))  # noqa: E731
    monkeypatch.setattr(cls, 'train_list', [[f, md5(f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, 'test_list', [[f, md5(f)] for f, _ in cls.test_list])


def test_a_copy_with_other_checksums_is_refused_naming_the_flag(tmp_path, no_network):
    write_cifar100(str(tmp_path))
    files = data_files('cifar100', str(tmp_path))
    before = [open(p, 'rb').read() for p in files]
    with pytest.raises(UserError) as info:
        load_dataset('cifar100', str(tmp_path))
    message = str(info.value)
    assert FLAG in message and 'cifar100' in message and 'not the official release' in message
    assert sha256_of(files)[:12] in message and '\n' not in message
    assert no_network == []                                  # nothing downloaded over it
    assert [open(p, 'rb').read() for p in files] == before


@pytest.mark.parametrize('name', sorted(LAYOUT))
def test_with_the_flag_the_copy_is_read_and_its_digest_kept(name, tmp_path, no_network):
    written = LAYOUT[name][1](str(tmp_path))
    ds = load_dataset(name, str(tmp_path), unofficial=True)
    for split, images, labels in (('train', ds.train_images, ds.train_labels),
                                  ('test', ds.test_images, ds.test_labels)):
        assert torch.equal(images, torch.from_numpy(written[split][0]))
        assert labels.tolist() == np.asarray(written[split][1]).tolist()
    assert ds.copy == {'official': False, 'sha256': sha256_of(data_files(name, str(tmp_path)))}
    assert no_network == []


def test_the_official_release_is_told_by_its_checksums(tmp_path, monkeypatch, no_network):
    write_cifar100(str(tmp_path))
    make_official(monkeypatch, 'cifar100', str(tmp_path))
    for unofficial in (False, True):   # the flag only permits: an official copy stays official
        ds = load_dataset('cifar100', str(tmp_path), unofficial=unofficial)
        assert ds.copy == {'official': True,
                           'sha256': sha256_of(data_files('cifar100', str(tmp_path)))}


def test_a_copy_with_impossible_labels_is_one_line(tmp_path, no_network):
    write_cifar100(str(tmp_path), num_train=4)
    path = data_files('cifar100', str(tmp_path))[0]
    with open(path, 'rb') as f:
        batch = pickle.load(f, encoding='latin1')
    batch['fine_labels'][0] = 100
    with open(path, 'wb') as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UserError, match='train holds 4 images and 4 labels, which must be 100 '
                                        'classes'):
        load_dataset('cifar100', str(tmp_path), unofficial=True)


def run(capsys, data, folder, *flags):
    code = cifar_baseline.main(['-d', 'cifar100', '--data-dir', str(data), '--depth', '8',
                                '--train-batch', '16', '--manualSeed', '1', '-c', str(folder),
                                *map(str, flags)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_run_says_records_and_keeps_its_copy(tmp_path, capsys):
    data, folder = tmp_path / 'data', tmp_path / 'run'
    write_cifar100(str(data), num_train=32, num_test=10)
    code, out, err = run(capsys, data, folder, '--epochs', 1)
    assert code == 2 and err.count('\n') == 1 and FLAG in err and not folder.exists()

    code, out, err = run(capsys, data, folder, '--epochs', 1, FLAG)
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1 and 'not the official release' in warnings[0]
    args = json.loads((folder / 'args.json').read_text())
    digest = sha256_of(data_files('cifar100', str(data)))
    assert args['unofficial_data'] is True
    assert args['data_copy'] == {'official': False, 'sha256': digest}
    assert args['device_name'].startswith('CPU') and args['torch_version'] == torch.__version__

    write_cifar100(str(data), num_train=32, num_test=10, seed=1)      # another copy
    kept = {name: (folder / name).read_bytes() for name in ('args.json', 'summary.csv')}
    code, out, err = run(capsys, data, folder, '--epochs', 2, FLAG, '--resume', 'auto')
    assert code == 2 and err.count('\n') == 1
    assert 'another copy of cifar100' in err and digest[:12] in err
    assert {name: (folder / name).read_bytes() for name in kept} == kept


def test_every_run_of_a_pack_records_its_copy_and_keeps_it(tmp_path, capsys):
    data, root = tmp_path / 'data', tmp_path / 'pack'
    write_cifar100(str(data), num_train=32, num_test=10)
    pack = ['-d', 'cifar100', '--data-dir', str(data), '--depth', '8', '--train-batch', '16',
            '--seeds', '1', '2', '-c', str(root / 'seed{seed}'), FLAG]
    assert cifar_baseline.main([*pack, '--epochs', '1']) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith('warning:') for line in out.splitlines()) == 1
    digest = sha256_of(data_files('cifar100', str(data)))
    for seed in (1, 2):
        args = json.loads((root / f'seed{seed}' / 'args.json').read_text())
        assert args['data_copy'] == {'official': False, 'sha256': digest}
    write_cifar100(str(data), num_train=32, num_test=10, seed=1)      # another copy
    assert cifar_baseline.main([*pack, '--epochs', '2', '--resume', 'auto']) == 2
    assert 'another copy of cifar100' in capsys.readouterr().err


def test_the_flag_is_refused_where_it_means_nothing(tmp_path, capsys):
    code = cifar_baseline.main(['-d', 'fashionmnist', '--data-dir', str(tmp_path), FLAG,
                                '-c', str(tmp_path / 'run')])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert f'{FLAG} applies to cifar10 and cifar100 only' in err


def test_the_helper_refuses_a_copy_that_is_not_the_rebuilt_one(tmp_path):
    """scripts/prepare_cifar100.sh checks the digest of what it would carry; the rebuilt copy
    itself needs FedLoRE's repository (docs/REPRODUCE.md), so the test gives it another."""
    tools, data = tmp_path / 'tools', tmp_path / 'data'
    tools.mkdir()
    (tools / 'cifar100_from_fedlore.py').write_text(   # GIT_DIR: where fakedata.py is
        'import os, sys\nsys.path.insert(0, sys.argv[1])\nfrom fakedata import write_cifar100\n'
        'write_cifar100(os.path.dirname(sys.argv[2]))\n')
    script = os.path.join(ROOT, 'scripts', 'prepare_cifar100.sh')
    proc = subprocess.run(['bash', script, os.path.join(ROOT, 'tests'), str(tools)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, 'DATA': str(data)})
    digest = sha256_of(data_files('cifar100', str(data)))
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1
    assert f'has sha256 {digest}, not the rebuilt copy' in proc.stderr
    assert not (data / 'transfer').exists()

"""docs/DEVELOPING.md states how many methods and networks there are and what an entry script
is; these tests hold those statements to the registries and the scripts."""
import os
import re

from conftest import ROOT
from methods import METHODS
from models import CIFAR_NETWORKS, IMAGENET_NETWORKS, NETWORKS

GUIDE = open(os.path.join(ROOT, 'docs', 'DEVELOPING.md')).read()


def stated(pattern):
    match = re.search(pattern, ' '.join(GUIDE.split()))
    assert match, pattern
    return int(match.group(1))


def test_the_guide_counts_the_methods_and_networks():
    assert stated(r'The project has (\d+) methods') == len(METHODS)
    assert stated(r'The registry holds (\d+) networks') == len(NETWORKS)
    assert stated(r'(\d+) for 32x32 images') == len(CIFAR_NETWORKS)
    assert stated(r"torchvision's (\d+) ImageNet") == len(IMAGENET_NETWORKS)


def test_every_entry_script_is_cifar_one_py_but_for_its_name():
    lines = stated(r'the (\d+)-line `cifar_one.py`')
    template = open(os.path.join(ROOT, 'cifar_one.py')).read()
    assert len(template.splitlines()) == lines
    for name, method in METHODS.items():
        script = open(os.path.join(ROOT, f'cifar_{name}.py')).read()
        title = 'the baseline' if name == 'baseline' else method.title
        expected = (template.replace("METHODS['one']", f"METHODS['{name}']")
                    .replace('cifar_one.py', f'cifar_{name}.py')
                    .replace('methods/one.py', f'methods/{name}.py')
                    .replace('Train ONE:', f'Train {title}:'))
        assert script == expected, name
        assert method.usage.strip(), name        # its --help text

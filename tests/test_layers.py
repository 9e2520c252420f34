"""The layers import downward only: models/ (networks) knows nothing of the project, utils/ (the
engine and run bookkeeping) knows no method and no network, methods/ uses both. So a new method
or network is a file in its own folder, and the engine never names one."""
import ast
import os

import pytest

from conftest import ROOT

# folder -> the project's top-level packages it must not import
FORBIDDEN = {'models': {'methods', 'utils'}, 'utils': {'methods', 'models'}}


def imported_packages(path):
    """The top-level names a module imports (absolute imports; relative ones stay inside)."""
    tree = ast.parse(open(path).read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


def modules(folder):
    base = os.path.join(ROOT, folder)
    return sorted(os.path.join(base, f) for f in os.listdir(base) if f.endswith('.py'))


@pytest.mark.parametrize('folder', sorted(FORBIDDEN))
def test_no_upward_imports(folder):
    offending = {os.path.relpath(path, ROOT): sorted(imported_packages(path) & FORBIDDEN[folder])
                 for path in modules(folder)}
    assert {path: names for path, names in offending.items() if names} == {}


def test_the_checker_sees_imports(tmp_path):
    module = tmp_path / 'm.py'
    module.write_text('import methods.one\nfrom models import resnet\nfrom .x import y\n'
                      'def f():\n    from utils import cli\n')
    assert imported_packages(str(module)) == {'methods', 'models', 'utils'}

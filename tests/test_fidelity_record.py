"""docs/FIDELITY.md names, for each fact, the test that pins it: every test it names exists, so
the record cannot point at a test that was renamed or removed."""
import ast
import os
import re

from conftest import ROOT

RECORD = os.path.join(ROOT, 'docs', 'FIDELITY.md')
# `tests/test_x.py::test_name`, or `::test_name` for another test of the module cited last
CITATION = re.compile(r'`(?:tests/(test_\w+\.py))?::(\w+)')


def functions_in(module):
    tree = ast.parse(open(os.path.join(ROOT, 'tests', module)).read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def citations(text):
    """(module, test) for every citation, in order; a bare ::name takes the last module."""
    found, module = [], None
    for named, test in CITATION.findall(text):
        module = named or module
        found.append((module, test))
    return found


def test_the_reader_resolves_short_citations():
    text = 'a `tests/test_a.py::test_x`, `::test_y`; b `tests/test_b.py::test_z` and `::test_w`'
    assert citations(text) == [('test_a.py', 'test_x'), ('test_a.py', 'test_y'),
                               ('test_b.py', 'test_z'), ('test_b.py', 'test_w')]


def test_every_cited_test_exists():
    cited = citations(open(RECORD).read())
    assert len(cited) > 40  # the record cites its tests
    missing = sorted({f'{module}::{name}' for module, name in cited
                      if not os.path.exists(os.path.join(ROOT, 'tests', module))
                      or name not in functions_in(module)})
    assert missing == []

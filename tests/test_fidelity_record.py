"""docs/FIDELITY.md names, for each fact, the test that pins it: every test it names exists, so
the record cannot point at a test that was renamed or removed."""
import ast
import os
import re

from conftest import ROOT

RECORD = os.path.join(ROOT, 'docs', 'FIDELITY.md')
CITATION = re.compile(r'tests/(test_\w+\.py)::(\w+)')


def functions_in(module):
    tree = ast.parse(open(os.path.join(ROOT, 'tests', module)).read())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_cited_test_exists():
    citations = CITATION.findall(open(RECORD).read())
    assert len(citations) > 40  # the record cites its tests
    missing = sorted({f'{module}::{name}' for module, name in citations
                      if not os.path.exists(os.path.join(ROOT, 'tests', module))
                      or name not in functions_in(module)})
    assert missing == []

"""The pages say only what the tree holds: every path they name exists, every
relative link resolves, every ``enn=dict(...)`` key they show is an option."""
import ast
import dataclasses
import glob
import os.path as osp
import re

import pytest

from enn_mm.core import ENNOptions

from helpers import REPO

PAGES = ['README.md', 'configs/paper/README.md'] + sorted(
    osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'docs', '*.md')))
# Paths of other projects that the pages name as theirs.
FOREIGN = {'tools/model_converters/openai-clip_to_mmpretrain-clip.py'}  # MMPretrain's
PATH = re.compile(r'(?<![\w/.-])((?:configs|tools|docs|enn_mm|tests)/[\w./{},*@ℓ-]*[\w/*}])')
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def expand(path: str):
    """``a_{x,y}_b`` -> ``a_x_b``, ``a_y_b`` (shell brace expansion)."""
    m = re.search(r'\{([^{}]*)\}', path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(',')
            for q in expand(path[:m.start()] + alt + path[m.end():])]


def named_paths(page: str):
    text = open(osp.join(REPO, page)).read()
    for raw in PATH.findall(text):
        for path in expand(raw.rstrip('.')):
            yield path


@pytest.mark.parametrize('page', PAGES)
def test_every_named_path_exists(page):
    missing = [p for p in set(named_paths(page)) if p not in FOREIGN
               and not glob.glob(osp.join(REPO, p))]
    assert not missing, f'{page} names paths that do not exist: {sorted(missing)}'


@pytest.mark.parametrize('page', PAGES)
def test_every_relative_link_resolves(page):
    text = open(osp.join(REPO, page)).read()
    here = osp.dirname(osp.join(REPO, page))
    broken = [t for t in LINK.findall(text) if '://' not in t
              and not osp.exists(osp.join(here, t))]
    assert not broken, f'{page} links to files that do not exist: {broken}'


def enn_keys(text: str):
    """The keys of every ``enn=dict(...)`` call written in the text."""
    for m in re.finditer(r'\benn=dict\(', text):
        depth, i = 0, m.end() - 1
        for i in range(m.end() - 1, len(text)):
            depth += {'(': 1, ')': -1}.get(text[i], 0)
            if depth == 0:
                break
        call = text[m.start() + len('enn='):i + 1]
        try:
            node = ast.parse(call, mode='eval').body
        except SyntaxError:
            continue  # an ellipsis or prose inside: not code
        yield from (kw.arg for kw in node.keywords if kw.arg)


def test_enn_keys_in_the_pages_are_options():
    options = {f.name for f in dataclasses.fields(ENNOptions)}
    seen = set()
    for page in PAGES:
        keys = set(enn_keys(open(osp.join(REPO, page)).read()))
        assert keys <= options, f'{page}: enn keys {sorted(keys - options)} are not ENN options'
        seen |= keys
    assert 'include' in seen  # the check read something
    # docs/usage.md's table documents every option, and nothing else
    text = open(osp.join(REPO, 'docs', 'usage.md')).read()
    rows = text.split('`enn` options', 1)[1].split('\n\n', 1)[1].split('\n\n', 1)[0]
    table = {k for line in rows.splitlines()[2:]
             for k in re.findall(r'`(\w+)`', line.split('|')[1])}
    assert table == options, table ^ options


def test_no_stale_names():
    for page in PAGES:
        text = open(osp.join(REPO, page)).read()
        assert 'epoch_8' not in text, page  # the recipes train 6 epochs
        assert not re.search(r'\bSPEC\b', text), page

"""The package's import structure: no cycles, and a core free of mmengine."""
import ast
import os.path as osp
import pkgutil
import subprocess
import sys

import enn_mm

from helpers import REPO


def modules():
    """Every module of ``enn_mm``: name -> path."""
    out = {'enn_mm': osp.join(REPO, 'enn_mm', '__init__.py')}
    for info in pkgutil.walk_packages(enn_mm.__path__, 'enn_mm.'):
        spec = info.module_finder.find_spec(info.name)
        out[info.name] = spec.origin
    return out


def imports_of(name: str, path: str, known) -> set:
    """The ``enn_mm`` modules that ``name`` imports anywhere in its source,
    top level or inside functions (a deferred import still ties the two)."""
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = package.split('.')
                parent = '.'.join(parts[:len(parts) - node.level + 1])
                base = f'{parent}.{base}' if base else parent
            # `from pkg import sub` imports the submodule; `from mod import x`, mod
            targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import enn_mm.core.ortho as o` etc.
                t = t.rpartition('.')[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycle():
    known = modules()
    graph = {n: imports_of(n, p, known) for n, p in known.items()}
    # a package's __init__ importing its own submodules is the package itself
    for n in graph:
        graph[n] = {t for t in graph[n] if not (n.startswith(t + '.') and
                                                 known[t].endswith('__init__.py'))}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = 'open'
        for t in sorted(graph[n]):
            if state.get(t) == 'open':
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[n] = 'done'

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, '\n'.join(' -> '.join(c) for c in cycles)


def test_core_imports_alone_without_mmengine():
    """The pure-PyTorch core loads in a fresh interpreter without mmengine,
    each of its modules on its own."""
    names = [n for n in modules() if n.startswith('enn_mm.core')]
    code = ('import sys, importlib\n'
            f'for name in {names!r}:\n'
            '    importlib.import_module(name)\n'
            "bad = [m for m in sys.modules if m.split('.')[0] in ('mmengine', 'mmpretrain')]\n"
            'assert not bad, bad\n')
    # enn_mm/__init__ imports the MMPretrain glue; load the core as its own package
    init, folder = osp.join(REPO, 'enn_mm', '__init__.py'), osp.join(REPO, 'enn_mm')
    proc = subprocess.run([sys.executable, '-c',
                           'import importlib.util, sys\n'
                           f"spec = importlib.util.spec_from_file_location('enn_mm', {init!r}, "
                           f"submodule_search_locations=[{folder!r}])\n"
                           'mod = importlib.util.module_from_spec(spec)\n'
                           "sys.modules['enn_mm'] = mod\n"
                           + code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]

"""Every component enn_mm registers in MMPretrain's registries is a class
whose name is its registry key (one name per component), and importing
enn_mm adds nothing else to them."""
import inspect

import mmpretrain.registry as registries
import pytest
from mmengine.registry import Registry


def enn_entries():
    """(registry name, key, object) of every entry enn_mm registered."""
    import enn_mm  # noqa: F401  (fills the registries)
    import enn_mm.evaluation  # noqa: F401
    import enn_mm.local  # noqa: F401
    import enn_mm.multimodal  # noqa: F401
    found = []
    for name, registry in vars(registries).items():
        if not isinstance(registry, Registry):
            continue
        for key, obj in registry.module_dict.items():
            if getattr(obj, '__module__', '').startswith('enn_mm'):
                found.append((name, key, obj))
    return found


def test_registered_names_are_class_names():
    entries = enn_entries()
    assert len(entries) >= 25
    bad = [(reg, key, obj) for reg, key, obj in entries
           if not inspect.isclass(obj) or obj.__name__ != key]
    assert not bad, bad
    # one name per component (ENNPipelineParallel is in MMPretrain's and in
    # mmengine's model-wrapper registry, where the Runner looks it up: same name)
    names = {}
    for _, key, obj in entries:
        names.setdefault(id(obj), set()).add(key)
    assert all(len(keys) == 1 for keys in names.values()), names


@pytest.mark.parametrize('prefix', ['ENN', 'Faiss'])
def test_registered_names_carry_the_project_prefix(prefix):
    keys = [key for _, key, _ in enn_entries()]
    assert all(k.startswith(('ENN', 'Faiss')) for k in keys), keys
    assert any(k.startswith(prefix) for k in keys)

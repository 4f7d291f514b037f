"""Give a built model extra behaviour by mixing a class into its own.

``ENNModel`` and ``ENNLocalClassifier`` build the model a config names and
then add behaviour to *that* object: its class becomes ``(Mixin, OwnClass)``,
so ``isinstance`` checks, state-dict keys and every method of the model's own
class keep working, and a checkpoint of it loads into the plain class. One
derived class per (mixin, class) pair, created once and named so that logs
and reprs say what it is.
"""
from typing import Dict, Tuple

from mmengine.logging import MessageHub

__all__ = ['mix_in', 'vanilla_class', 'runner_iteration']

# (mixin, base) -> derived class; one cache for every mixin of the package.
_DERIVED: Dict[Tuple[type, type], type] = {}


def mix_in(obj, mixin: type, prefix: str):
    """Make ``obj`` an instance of ``(mixin, type(obj))``, in place.

    Args:
        obj: The built model.
        mixin (type): The class with the added behaviour.
        prefix (str): Prepended to the class name (``'ENN'``: ``ENNImageClassifier``).

    Returns:
        ``obj`` itself.
    """
    base = type(obj)
    key = (mixin, base)
    if key not in _DERIVED:
        _DERIVED[key] = type(f'{prefix}{base.__name__}', (mixin, base), {})
    obj.__class__ = _DERIVED[key]
    return obj


def vanilla_class(obj) -> type:
    """The class of ``obj`` without any mixin added by :func:`mix_in`."""
    cls = type(obj)
    bases = {derived: base for (_, base), derived in _DERIVED.items()}
    while cls in bases:
        cls = bases[cls]
    return cls


def runner_iteration() -> int:
    """The Runner's iteration counter (0 outside a run): the same on every
    rank and restored by ``--resume``, so schedules that follow it are too."""
    return MessageHub.get_current_instance().get_info('iter', 0)

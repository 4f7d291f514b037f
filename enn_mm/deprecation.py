"""Old names kept working, with a warning that names the new one."""
import functools
import warnings
from typing import Callable

__all__ = ['deprecated_alias']


def deprecated_alias(func: Callable, old_name: str) -> Callable:
    """``func`` under its former Python name ``old_name``: each call warns
    (``DeprecationWarning``) and then calls ``func``. A registry entry keeps
    ``old_name`` as its config ``type`` without a warning: configs are not
    deprecated, only the Python spelling of the factory."""

    @functools.wraps(func)
    def alias(*args, **kwargs):
        warnings.warn(f'{old_name}(...) is deprecated: call {func.__name__}(...) '
                      f"(configs keep type='{old_name}').", DeprecationWarning, stacklevel=2)
        return func(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old_name
    alias.__doc__ = f'Deprecated name of :func:`{func.__name__}`.'
    return alias

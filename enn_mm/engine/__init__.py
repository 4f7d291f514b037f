from . import checkpoint  # noqa: F401  (safe loading of mmengine checkpoints)
from .optimizers import ENNOptimWrapperConstructor

__all__ = ['ENNOptimWrapperConstructor']

from . import (
    checkpoint,  # noqa: F401  (safe loading of mmengine checkpoints)
    dist,  # noqa: F401  (CPU distributed launch)
)
from .hooks import ENNDiagnosticsHook
from .optimizers import ENNAmpOptimWrapper, ENNOptimWrapper, ENNOptimWrapperConstructor

__all__ = ['ENNDiagnosticsHook', 'ENNOptimWrapperConstructor', 'ENNOptimWrapper',
           'ENNAmpOptimWrapper']

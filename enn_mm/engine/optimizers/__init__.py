from .enn_constructor import ENNOptimWrapperConstructor
from .enn_optim_wrapper import ENNAmpOptimWrapper, ENNOptimWrapper

__all__ = ['ENNOptimWrapperConstructor', 'ENNOptimWrapper', 'ENNAmpOptimWrapper']

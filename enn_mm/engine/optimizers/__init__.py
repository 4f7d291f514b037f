from .enn_constructor import ENNOptimWrapperConstructor

__all__ = ['ENNOptimWrapperConstructor']

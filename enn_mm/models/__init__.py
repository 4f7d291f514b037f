from . import layers  # noqa: F401  (registers ENNConv2d / ENNLinear)
from .enn_model import ENNModel, ENNModelMixin

__all__ = ['ENNModel', 'ENNModelMixin']

from . import layers  # noqa: F401  (registers ENNConv2d / ENNLinear)
from .dense_export import ExportCheckError, dense_config, export_checkpoint
from .enn_model import ENNModel, ENNModelMixin, vanilla_class

__all__ = ['ENNModel', 'ENNModelMixin', 'vanilla_class', 'dense_config', 'export_checkpoint',
           'ExportCheckError']

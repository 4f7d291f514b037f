from . import layers  # noqa: F401  (registers ENNConv2d / ENNLinear)
from .dense_export import ExportCheckError, dense_config, export_checkpoint
from .enn_model import ENNModel
from .loading import CheckpointMismatchError, build_model, init_model, load_model_checkpoint
from .mixin import MixinModel, vanilla_class

__all__ = ['ENNModel', 'MixinModel', 'vanilla_class', 'dense_config',
           'export_checkpoint',
           'ExportCheckError', 'CheckpointMismatchError', 'build_model', 'init_model',
           'load_model_checkpoint']

from . import layers  # noqa: F401  (registers ENNConv2d / ENNLinear)
from .dense_export import ExportCheckError, dense_config, export_checkpoint
from .enn_model import ENNModel, ENNModelMixin, enn_model
from .loading import CheckpointMismatchError, build_model, init_model, load_model_checkpoint
from .mixin import mix_in, runner_iteration, vanilla_class

__all__ = ['enn_model', 'ENNModel', 'ENNModelMixin', 'mix_in', 'vanilla_class', 'runner_iteration', 'dense_config', 'export_checkpoint',
           'ExportCheckError', 'CheckpointMismatchError', 'build_model', 'init_model',
           'load_model_checkpoint']

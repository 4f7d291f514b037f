"""ENN-ℓ: block-wise local learning without backpropagation across blocks.

Importing this package registers ``ENNLocalClassifier``, the local heads
(``ENN*LocalHead``) and objectives (``ENN*Objective``) (MODELS) and
``ENNLocalOptimWrapperConstructor`` (OPTIM_WRAPPER_CONSTRUCTORS),
``ENNPipelineParallel`` (MODEL_WRAPPERS) and ``ENNPipelineTrainLoop`` (LOOPS)
in MMPretrain's registries.
"""
from . import export
from .export import plain_config, plain_model_config, strip_local_heads
from .heads import (HEAD_TYPES, AuxNetHead, ConvAuxHead, DownstreamHead, FrozenLinearHead,
                    PoolLinearHead, build_local_head)
from .local_model import ENNLocalClassifier, LocalLearningMixin, block_key
from .objectives import (OBJECTIVE_TYPES, ClassificationObjective, ReconstructionObjective,
                         SimilarityObjective, block_weights, similarity_matrix)
from .memory import SavedTensorMeter
from .optim import ENNLocalOptimWrapperConstructor, ENNLocalOptimWrapperDict
from .partition import CUT_PRESETS, Partition, probe_partition, resolve_cuts
from .pipeline import ENNPipelineParallel
from .pipeline_loop import ENNPipelineTrainLoop
from .segment import plan_stages

__all__ = [
    'ENNLocalClassifier', 'LocalLearningMixin', 'ENNLocalOptimWrapperConstructor',
    'ENNLocalOptimWrapperDict', 'Partition', 'probe_partition', 'resolve_cuts',
    'CUT_PRESETS', 'HEAD_TYPES', 'FrozenLinearHead', 'PoolLinearHead', 'ConvAuxHead',
    'AuxNetHead', 'DownstreamHead', 'build_local_head', 'OBJECTIVE_TYPES',
    'ClassificationObjective', 'ReconstructionObjective', 'SimilarityObjective',
    'block_weights', 'similarity_matrix', 'block_key', 'plain_config', 'plain_model_config',
    'strip_local_heads', 'SavedTensorMeter', 'export', 'ENNPipelineParallel',
    'ENNPipelineTrainLoop', 'plan_stages'
]

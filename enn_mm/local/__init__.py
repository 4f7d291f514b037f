"""ENN-ℓ: block-wise local learning without backpropagation across blocks.

Importing this package registers ``ENNLocalClassifier``, the local heads
(``ENN*LocalHead``) and objectives (``ENN*Objective``) (MODELS),
``ENNLocalOptimWrapperConstructor`` (OPTIM_WRAPPER_CONSTRUCTORS),
``ENNPipelineParallel`` (MODEL_WRAPPERS), ``ENNPipelineTrainLoop`` (LOOPS),
``ENNPipelineHook`` (HOOKS) and ``ENNPipelineSampler`` (DATA_SAMPLERS) in
MMPretrain's registries.

Modules, by concern: ``partition`` (cut points, which block owns which
parameter), ``heads`` / ``objectives`` (what each block learns from),
``step`` (one training step, block by block), ``local_model`` (the model),
``optim`` (one optimizer per block); the pipeline: ``planning`` (probe, cost
model, timing, split), ``stage`` (running one stage), ``transport`` (messages
between stages), ``pipeline`` (the wrapper), ``pipeline_hook``,
``pipeline_sampler``, ``pipeline_loop``; ``plain`` (ENN-ℓ checkpoint →
plain classifier).
"""
from . import export
from .plain import plain_checkpoint, plain_config, plain_model_config, strip_local_heads
from .heads import (HEAD_TYPES, AuxNetHead, ConvAuxHead, DownstreamHead, FrozenLinearHead,
                    PoolLinearHead, build_local_head)
from .local_model import ENNLocalClassifier, LocalLearningMixin, enn_local_classifier
from .objectives import (OBJECTIVE_TYPES, ClassificationObjective, ReconstructionObjective,
                         SimilarityObjective, block_weights, similarity_matrix)
from .memory import SavedTensorMeter
from .optim import ENNLocalOptimWrapperConstructor, ENNLocalOptimWrapperDict
from .partition import CUT_PRESETS, Partition, probe_partition, resolve_cuts
from .pipeline import ENNPipelineParallel
from .pipeline_hook import ENNPipelineHook
from .pipeline_loop import ENNPipelineTrainLoop
from .pipeline_sampler import ENNPipelineSampler
from .planning import plan_stages
from .step import LocalStep, block_key

__all__ = [
    'enn_local_classifier', 'ENNLocalClassifier', 'LocalLearningMixin', 'LocalStep',
    'ENNLocalOptimWrapperConstructor', 'ENNLocalOptimWrapperDict', 'Partition',
    'probe_partition', 'resolve_cuts', 'CUT_PRESETS', 'HEAD_TYPES', 'FrozenLinearHead',
    'PoolLinearHead', 'ConvAuxHead', 'AuxNetHead', 'DownstreamHead', 'build_local_head',
    'OBJECTIVE_TYPES', 'ClassificationObjective', 'ReconstructionObjective',
    'SimilarityObjective', 'block_weights', 'similarity_matrix', 'block_key', 'plain_config',
    'plain_model_config', 'strip_local_heads', 'plain_checkpoint', 'SavedTensorMeter', 'export',
    'ENNPipelineParallel', 'ENNPipelineHook', 'ENNPipelineSampler', 'ENNPipelineTrainLoop',
    'plan_stages'
]

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
``optim`` (one optimizer per block), ``costs`` (FLOPs of each block and
its head); the pipeline: ``planning`` (probe, cost
model, timing, split), ``stage`` (running one stage), ``transport`` (messages
between stages), ``pipeline`` (the wrapper), ``pipeline_hook``,
``pipeline_sampler``, ``pipeline_loop``; ``plain`` (ENN-ℓ checkpoint →
plain classifier).
"""
from .costs import local_flops
from .heads import (
    ENNAuxNetLocalHead,
    ENNConvAuxLocalHead,
    ENNDownstreamLocalHead,
    ENNFrozenLinearLocalHead,
    ENNMomentumLocalHead,
    ENNPoolLinearLocalHead,
    ENNRandomProjectionLocalHead,
)
from .local_model import ENNLocalClassifier
from .memory import SavedTensorMeter
from .objectives import (
    ENNClassificationObjective,
    ENNReconstructionObjective,
    ENNSimilarityObjective,
)
from .optim import ENNLocalOptimWrapperConstructor
from .partition import CUT_PRESETS
from .pipeline import ENNPipelineParallel
from .pipeline_hook import ENNPipelineHook
from .pipeline_loop import ENNPipelineTrainLoop
from .pipeline_sampler import ENNPipelineSampler
from .plain import plain_checkpoint, plain_config, strip_local_heads

# What a user names in a config or calls; the helpers are imported from their
# modules (enn_mm.local.partition, .planning, .step, ...).
__all__ = [
    'ENNLocalClassifier', 'ENNLocalOptimWrapperConstructor', 'ENNFrozenLinearLocalHead',
    'ENNPoolLinearLocalHead', 'ENNConvAuxLocalHead', 'ENNAuxNetLocalHead',
    'ENNDownstreamLocalHead', 'ENNRandomProjectionLocalHead', 'ENNMomentumLocalHead',
    'ENNClassificationObjective',
    'ENNReconstructionObjective',
    'ENNSimilarityObjective', 'ENNPipelineParallel', 'ENNPipelineHook', 'ENNPipelineSampler',
    'ENNPipelineTrainLoop', 'CUT_PRESETS', 'plain_checkpoint', 'plain_config',
    'strip_local_heads', 'SavedTensorMeter', 'local_flops'
]

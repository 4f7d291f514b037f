"""enn-mm: Eigen Neural Networks for MMPretrain.

The core (:mod:`enn_mm.core`) is plain PyTorch. Importing ``enn_mm`` with
MMPretrain installed also registers the MMPretrain integration (models,
optimizer constructors, hooks, metrics), which is what
``custom_imports = dict(imports=['enn_mm'])`` relies on.
"""
import importlib.util

from .core import (
    COMPUTE_MODES,
    ENNConv2d,
    ENNLinear,
    ENNOptions,
    Retraction,
    convert_to_enn,
    enable_retraction,
    enn_modules,
    export_dense,
    orthogonality_error,
    orthogonality_penalty,
    set_compute,
)

__version__ = '0.1.0'
__all__ = [
    'ENNConv2d', 'ENNLinear', 'ENNOptions', 'convert_to_enn', 'export_dense',
    'orthogonality_error', 'orthogonality_penalty', 'enable_retraction', 'Retraction',
    'enn_modules', 'set_compute', 'COMPUTE_MODES'
]

if importlib.util.find_spec('mmpretrain') is not None:
    from . import engine, local, models  # noqa: F401,E402  (fill the registries)
    if importlib.util.find_spec('faiss') is not None:  # the [cpu] / [gpu] extra
        # Faiss* metrics and loops; the ECLIP retriever evaluates with them
        from . import evaluation, multimodal  # noqa: F401,E402
        from .evaluation import image_text_retrieval_metrics, retrieval_metrics  # noqa: E402
        __all__ += ['retrieval_metrics', 'image_text_retrieval_metrics']

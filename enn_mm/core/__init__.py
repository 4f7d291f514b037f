"""Pure-PyTorch core of enn-mm: no mmengine imports here."""
from .convert import (
    SUPPORTED_TYPES,
    convert_to_enn,
    dense_view,
    enn_modules,
    export_dense,
    factors,
    is_enn,
    register_eigenbasis,
)

# `eigenbasis(layer)` stays in `enn_mm.core.eigenbasis`: re-exported here it
# would shadow that submodule (`import enn_mm.core.eigenbasis as m` would give
# the function).
from .eigenbasis import Eigenbasis, factor_names, factorize
from .factored import COMPUTE_MODES, set_compute
from .layers import ENNConv2d, ENNLinear
from .options import ENNOptions
from .ortho import (
    Retraction,
    bases,
    basis_error,
    basis_penalty,
    enable_retraction,
    orthogonality_error,
    orthogonality_penalty,
    retract_,
)
from .share import share_bases, share_groups

__all__ = [
    'Eigenbasis', 'factorize', 'factor_names', 'ENNConv2d', 'ENNLinear', 'ENNOptions',
    'SUPPORTED_TYPES', 'convert_to_enn', 'export_dense', 'dense_view',
    'enn_modules', 'factors', 'is_enn', 'register_eigenbasis', 'bases',
    'basis_error', 'basis_penalty', 'orthogonality_error',
    'orthogonality_penalty', 'enable_retraction', 'Retraction', 'retract_', 'share_bases',
    'share_groups', 'set_compute', 'COMPUTE_MODES'
]

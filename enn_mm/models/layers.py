"""Register the ENN layers so configs can build them (``conv_cfg`` etc.)."""
from mmpretrain.registry import MODELS

from ..core import ENNConv2d, ENNLinear

MODELS.register_module(module=ENNConv2d)
MODELS.register_module(module=ENNLinear)

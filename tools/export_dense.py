"""Export a trained ENN checkpoint to a plain dense MMPretrain checkpoint.

    python tools/export_dense.py CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (state dict of ordinary Conv2d/Linear weights; loads with
``torch.load(..., weights_only=True)`` and into vanilla MMPretrain without
this plugin) and ``OUT.py`` (the same config with the ENN lines removed), then
checks that the dense model gives the same outputs as the ENN model
(:func:`enn_mm.models.export_checkpoint`).
"""
import enn_mm  # noqa: F401  (registries, safe checkpoint loading)
from enn_mm.models import export_checkpoint
from enn_mm.models.dense_export import export_cli


def main():
    export_cli(export_checkpoint, __doc__.split('\n')[0])


if __name__ == '__main__':
    main()

"""Turn an ENN-ℓ checkpoint into one of the plain classifier (no local heads).

    python tools/export_local.py CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (the state dict without ``local_heads.``) and ``OUT.py``
(the config with the inner model in place of ``ENNLocalClassifier``), and
checks that the plain model computes exactly what the ENN-ℓ model computes
(:func:`enn_mm.local.plain.plain_checkpoint`). If the inner model is an
``ENNModel``, ``tools/export_dense.py OUT.py OUT.pth DENSE.pth`` then gives a
checkpoint for vanilla MMPretrain.
"""
import enn_mm  # noqa: F401  (registries, safe checkpoint loading)
from enn_mm.local.plain import plain_checkpoint
from enn_mm.models.dense_export import export_cli


def main():
    export_cli(plain_checkpoint, __doc__.split('\n')[0])


if __name__ == '__main__':
    main()

"""Deprecated: use ``tools/export_local.py`` (:mod:`enn_mm.local.plain`).

    python -m enn_mm.local.export CONFIG CHECKPOINT OUT.pth

still works: it warns and runs :func:`enn_mm.local.plain_checkpoint`, as
``python tools/export_local.py CONFIG CHECKPOINT OUT.pth`` does. The names
below are re-exported from :mod:`enn_mm.local.plain`.
"""
import warnings

from .plain import plain_config, plain_model_config, strip_local_heads

__all__ = ['plain_model_config', 'strip_local_heads', 'plain_config']


def main(argv=None) -> dict:
    """``tools/export_local.py``'s command line, with a DeprecationWarning."""
    warnings.warn('python -m enn_mm.local.export is deprecated; use '
                  'tools/export_local.py CONFIG CHECKPOINT OUT.pth',
                  DeprecationWarning, stacklevel=2)
    import enn_mm  # noqa: F401  (registries)
    from ..models.dense_export import export_cli
    from .plain import plain_checkpoint
    return export_cli(plain_checkpoint, 'Drop the local heads of an ENN-ℓ checkpoint.',
                      argv)


if __name__ == '__main__':
    main()

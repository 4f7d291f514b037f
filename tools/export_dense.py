"""Export a trained ENN checkpoint to a plain dense MMPretrain checkpoint.

    python tools/export_dense.py CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (state dict of ordinary Conv2d/Linear weights; loads with
``torch.load(..., weights_only=True)`` and into vanilla MMPretrain without
this plugin) and ``OUT.py`` (the same config with the ENN lines removed), then
checks that the dense model gives the same outputs as the ENN model
(:func:`enn_mm.models.export_checkpoint`).
"""
import argparse

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import init_default_scope

import enn_mm  # noqa: F401  (registries, safe checkpoint loading)
from enn_mm.models import ExportCheckError, export_checkpoint


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output checkpoint path (.pth)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    try:
        result = export_checkpoint(cfg, args.checkpoint, args.out)
    except (ValueError, ExportCheckError) as err:
        raise SystemExit(f'{args.checkpoint} / {args.config}: {err}')
    print_log(f"exported {args.checkpoint} -> {args.out} (config {result['config']})",
              logger='current')


if __name__ == '__main__':
    main()

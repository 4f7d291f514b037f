"""Export a trained ENN checkpoint to a plain dense MMPretrain checkpoint.

    python tools/export_dense.py CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (state dict of ordinary Conv2d/Linear weights; loads with
``torch.load(..., weights_only=True)`` and into vanilla MMPretrain without
this plugin) and ``OUT.py`` (the same config with the ENN lines removed), then
checks that the dense model gives the same outputs as the ENN model.
"""
import argparse
import copy
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from mmpretrain.registry import MODELS
import enn_mm
from enn_mm.models.enn_model import ENNModelMixin

ENN_LAYER_TYPES = {'ENNConv2d': 'Conv2d', 'ENNLinear': 'Linear'}


def dense_config(cfg: Config) -> Config:
    """The config without ENN: inner model, plain layers, no plugin import."""
    cfg = copy.deepcopy(cfg)
    if cfg.model.get('type') == 'ENNModel':
        cfg.model = cfg.model.model

    def plain(node):
        if isinstance(node, dict):
            if node.get('type') in ENN_LAYER_TYPES:
                node['type'] = ENN_LAYER_TYPES[node['type']]
            for value in node.values():
                plain(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                plain(value)

    plain(cfg.model)
    # ENN-only training helpers have no meaning for a dense model
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if not _is_plugin(h.get('type'))]
    if cfg.get('optim_wrapper', {}).get('constructor') == 'ENNOptimWrapperConstructor':
        cfg.optim_wrapper.pop('constructor')
    cfg.load_from = None
    # Drop the plugin import unless something else of the plugin (a Faiss
    # metric, say) is still used: then the dense config stays runnable.
    leftovers = sorted(_plugin_types(cfg.to_dict()))
    if leftovers:
        print_log(f'the dense config still uses {leftovers} and keeps custom_imports; the '
                  'checkpoint itself loads without the plugin', logger='current')
    else:
        cfg.pop('custom_imports', None)
    return cfg


def _is_plugin(type_name) -> bool:
    return isinstance(type_name, str) and type_name.startswith(('ENN', 'Faiss'))


def _plugin_types(node) -> set:
    found = set()
    if isinstance(node, dict):
        if _is_plugin(node.get('type')):
            found.add(node['type'])
        for value in node.values():
            found |= _plugin_types(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found |= _plugin_types(value)
    return found


def first_batch(cfg: Config, model, n: int = 8):
    """A few real test images through the model's preprocessor, if reachable."""
    from mmengine.runner import Runner
    try:
        loader_cfg = copy.deepcopy(cfg.test_dataloader)
        loader_cfg.update(batch_size=n, num_workers=0, persistent_workers=False)
        data = next(iter(Runner.build_dataloader(loader_cfg)))
    except Exception as err:  # data not on this machine: say so, do not fail
        print_log(f'output check skipped: test data unavailable ({err})', logger='current')
        return None
    return model.data_preprocessor(data, False)['inputs']


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

    model = MODELS.build(cfg.model)
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    if not any(True for _ in enn_mm.enn_modules(model)):
        raise SystemExit(f'{args.checkpoint} / {args.config}: the model has no ENN '
                         'layers, there is nothing to export.')
    ortho_err = enn_mm.orthogonality_error(model)
    inputs = first_batch(cfg, model)
    with torch.no_grad():
        ref = model(inputs, mode='tensor') if inputs is not None else None

    enn_mm.export_dense(model)
    if isinstance(model, ENNModelMixin):  # back to the vanilla class
        model.__class__ = type(model).__mro__[2]
    dense_cfg = dense_config(cfg)
    meta = dict(dataset_meta=ckpt.get('meta', {}).get('dataset_meta'),
                enn_mm=dict(version=enn_mm.__version__, source=osp.abspath(args.checkpoint),
                            orthogonality_error=ortho_err))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), args.out)
    cfg_out = osp.splitext(args.out)[0] + '.py'
    dense_cfg.dump(cfg_out)

    # Independent check: the vanilla model, built from the dense config,
    # loads the file safely and strictly and computes the same outputs.
    vanilla = MODELS.build(dense_cfg.model).eval()
    state = torch.load(args.out, map_location='cpu', weights_only=True)['state_dict']
    vanilla.load_state_dict(state, strict=True)
    if ref is not None:
        with torch.no_grad():
            out = vanilla(inputs, mode='tensor')
        out, ref = (o[-1] if isinstance(o, (tuple, list)) else o for o in (out, ref))
        diff = ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
        print_log(f'dense export vs ENN model: max relative output difference {diff:.2e}',
                  logger='current')
        if diff > 1e-4:
            raise SystemExit(f'exported model differs from the ENN model ({diff:.2e})')
    print_log(f'exported {args.checkpoint} -> {args.out} (config {cfg_out})', logger='current')


if __name__ == '__main__':
    main()

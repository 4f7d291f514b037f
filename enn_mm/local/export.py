"""Turn an ENN-ℓ checkpoint into one of the plain classifier (no local heads).

    python -m enn_mm.local.export CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (the state dict without ``local_heads.``) and ``OUT.py``
(the config with the inner model in place of ``ENNLocalClassifier``), and
checks that the plain model computes what the ENN-ℓ model computes. If the
inner model is an ``ENNModel``, ``tools/export_dense.py OUT.py OUT.pth
DENSE.pth`` then gives a checkpoint for vanilla MMPretrain.
"""
import argparse
import copy
import os.path as osp

import torch

__all__ = ['plain_model_config', 'strip_local_heads', 'plain_config']

HEADS_PREFIX = 'local_heads.'


def plain_model_config(model_cfg: dict) -> dict:
    """The model config without ENN-ℓ: the inner model's (ENN or dense)."""
    model_cfg = copy.deepcopy(model_cfg)
    if model_cfg.get('type') == 'ENNLocalClassifier':
        model_cfg = model_cfg['model']
    return model_cfg


def strip_local_heads(state_dict: dict) -> dict:
    """``state_dict`` without the local heads' (and their loss's) entries."""
    return type(state_dict)((k, v) for k, v in state_dict.items()
                            if not k.startswith((HEADS_PREFIX, 'local_loss.',
                                                   'local_objectives.')))


def plain_config(cfg):
    """The full config for the plain classifier: inner model, one optimizer
    built by the rules constructor the blocks used, one schedule."""
    cfg = copy.deepcopy(cfg)
    cfg.model = plain_model_config(cfg.model)
    optim = cfg.get('optim_wrapper', None)
    if optim and optim.get('constructor') == 'ENNLocalOptimWrapperConstructor':
        rules = optim.pop('block_constructor', None) or (
            'ENNOptimWrapperConstructor' if cfg.model.get('type') == 'ENNModel'
            else 'DefaultOptimWrapperConstructor')
        optim['constructor'] = rules
    sched = cfg.get('param_scheduler', None)
    if isinstance(sched, dict) and 'type' not in sched:  # one list per block
        cfg.param_scheduler = next(iter(sched.values()))
    cfg.load_from = None
    return cfg


def main():
    from mmengine.config import Config, DictAction
    from mmengine.logging import print_log
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint

    from mmpretrain.registry import MODELS
    import enn_mm  # noqa: F401
    import enn_mm.local  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('out', help='output checkpoint path (.pth)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args()

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.model.get('type') != 'ENNLocalClassifier':
        raise SystemExit(f'{args.config}: the model is not an ENNLocalClassifier; '
                         'there are no local heads to drop.')
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model).eval()
    ckpt = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)

    out_cfg = plain_config(cfg)
    state = strip_local_heads(model.state_dict())
    plain = MODELS.build(copy.deepcopy(out_cfg.model)).eval()
    plain.load_state_dict(state, strict=True)
    x = torch.randn(4, *cfg.model.input_shape)
    with torch.no_grad():
        ref, out = model(x, mode='tensor'), plain(x, mode='tensor')
    if not torch.equal(ref, out):
        raise SystemExit('the plain model computes something else than the ENN-ℓ model')

    meta = dict(dataset_meta=ckpt.get('meta', {}).get('dataset_meta'),
                enn_local=dict(source=osp.abspath(args.checkpoint)))
    torch.save(dict(state_dict=state, meta=meta), args.out)
    cfg_out = osp.splitext(args.out)[0] + '.py'
    out_cfg.dump(cfg_out)
    print_log(f'exported {args.checkpoint} -> {args.out} (config {cfg_out}), '
              f'{len(model.state_dict()) - len(state)} local-head entries dropped',
              logger='current')


if __name__ == '__main__':
    main()

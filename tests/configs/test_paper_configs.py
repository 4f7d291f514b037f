"""configs/paper: each config builds and trains one iteration on its data set's
real file format.

Every ``configs/paper/<data set>/*.py`` is collected (new configs are covered
automatically). Each is loaded with ``Config.fromfile``, shrunk for one CPU
thread and run through MMPretrain's ``Runner`` for ONE training iteration on a
fixture written in the data set's real format (CIFAR python pickles,
tiny-imagenet-200 folder tree + the val list of tools/prepare_tiny_imagenet.py,
ImageNet folders + meta lists). What the shrinking changes, and only that:

- batch 2 (the dataset's ``indices=2``: one iteration), no workers, one epoch, no
  validation run, no checkpoints, the ENN diagnostics hook without its plots;
- ImageNet inputs at 32 px instead of 224 (Resize 36 -> CenterCrop 32, ViT
  ``img_size=32``); Tiny-ImageNet ENN-ℓ inputs at 32 px instead of 64 (the
  frozen local heads grow with the feature map: 13 GiB for ResNet-152 at 64 px);
- ENN models at a quarter of their width (ResNet stem/base channels 64 -> 16,
  ViT-B embedding 768 -> 192, 12 heads and 12 layers kept): converting a layer
  costs an SVD, and the full-width ENN ResNet-152 alone takes ~20 s to build on
  one thread. Depth, blocks, the ENN-ℓ partition and its per-block schedules,
  heads, optimizers, schedules and data pipelines are the configs' own. Dense
  models run at full width. ``ENN_PAPER_FULL_SIZE=1`` runs every model at full
  width (input sizes as above; several minutes).

A second test checks every config's recipe against the authors' recipe tables, written
out again here.
"""
import copy
import functools
import glob
import math
import os
import os.path as osp
import subprocess
import sys
import uuid

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.datasets import CIFAR10, CIFAR100
from mmpretrain.registry import DATASETS

import enn_mm

from helpers import REPO, write_cifar, write_imagenet, write_tiny_imagenet

PAPER = osp.join(REPO, 'configs', 'paper')
CONFIGS = sorted(
    osp.relpath(p, PAPER) for p in glob.glob(osp.join(PAPER, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, PAPER).split(os.sep))
FULL_SIZE = os.environ.get('ENN_PAPER_FULL_SIZE') == '1'
WIDTH = 16  # ResNet stem/base channels of the shrunk ENN models (64 in the configs)
VIT_SMALL = dict(embed_dims=192, num_layers=12, num_heads=12, feedforward_channels=768)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope='module')
def memoised_package_config_lookup():
    """mmengine resolves every `mmpretrain::` base by parsing MMPretrain's
    model index and metafiles again (~0.15 s each, 2-4 per config); here each
    (package path, config) pair is resolved once. The lookup is a function of
    its arguments only, so the configs load exactly as without this."""
    import mmengine.config.config as mmengine_config
    lookup = mmengine_config._get_external_cfg_path
    results = {}

    def memoised(*args):
        if args not in results:
            try:
                results[args] = (lookup(*args), None)
            except (ValueError, FileNotFoundError) as error:  # the caller handles these
                # kept without its traceback, whose frames would keep every
                # test's runner alive
                results[args] = (None, (type(error), error.args))
        value, error = results[args]
        if error is not None:
            raise error[0](*error[1])
        return value

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmengine_config, '_get_external_cfg_path', memoised)
        yield


# ------------------------------------------------------------------ data fixtures
@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    """One fixture per data set, each in its real on-disk format."""
    base = tmp_path_factory.mktemp('paper_data')
    roots = {}
    roots['cifar10'] = write_cifar(str(base / 'cifar10'), 'cifar10')
    roots['cifar100'] = write_cifar(str(base / 'cifar100'), 'cifar100')
    tiny = base / 'tiny-imagenet-200'
    tiny.mkdir()
    write_tiny_imagenet(str(tiny), classes=10)
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'prepare_tiny_imagenet.py'),
                           str(tiny)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    roots['tiny_imagenet'] = str(tiny)
    roots['imagenet'] = write_imagenet(str(base / 'imagenet'))
    return roots


@pytest.fixture
def cifar_md5_off(monkeypatch):
    """MMPretrain's CIFAR datasets check each file's md5 against the real
    CIFAR release and download it on a mismatch. The fixture has the real
    format but random content, so its files are registered without an md5
    (an md5 of None is the datasets' own "do not check" value)."""
    for cls in (CIFAR10, CIFAR100):
        for attr in ('train_list', 'test_list'):
            monkeypatch.setattr(cls, attr, [[name, None] for name, _ in getattr(cls, attr)])
        monkeypatch.setattr(cls, 'meta', dict(cls.meta, md5=None))


# ------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=None)
def _load(rel):
    cfg = Config.fromfile(osp.join(PAPER, rel))
    # without yapf formatting of the config text the Runner logs and dumps
    # (~0.35 s a run); mmengine 0.10's fromfile does not pass its own
    # format_python_code=False on, the constructor does
    return Config(cfg.to_dict(), cfg_text=cfg.text, filename=cfg.filename,
                  format_python_code=False)


def load(rel):
    return copy.deepcopy(_load(rel))


def data_set(rel):
    return rel.split(os.sep)[0]


def method(rel):
    name = osp.splitext(osp.basename(rel))[0]
    return 'enn_local' if name.endswith('_enn_local') else name.rsplit('_', 1)[1]


def inner(model_cfg):
    """The ImageClassifier config inside ENNLocalClassifier / ENNModel."""
    while model_cfg.type != 'ImageClassifier':
        model_cfg = model_cfg.model
    return model_cfg


def _set_input_size(pipeline, size):
    for t in pipeline:
        if t['type'] == 'ResizeEdge':
            t['scale'] = round(size * 256 / 224)
        elif t['type'] in ('CenterCrop', 'RandomCrop', 'RandomResizedCrop'):
            t['crop_size' if 'crop_size' in t else 'scale'] = size


def shrink(cfg, rel, data_root, work_dir):
    """The config as it is, made to run one iteration on one CPU thread (see
    the module docstring for what changes)."""
    ds, kind = data_set(rel), method(rel)
    net = inner(cfg.model)
    loader = cfg.train_dataloader
    loader.update(batch_size=2, num_workers=0, persistent_workers=False, pin_memory=False)
    loader.dataset.data_root = data_root
    loader.dataset.indices = 2  # one iteration of batch 2
    # no pickled copy of the two-sample list (its gc.collect() costs ~0.4 s per dataset)
    loader.dataset.serialize_data = False
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1)
    for key in ('val', 'test'):
        cfg[f'{key}_dataloader'] = cfg[f'{key}_cfg'] = cfg[f'{key}_evaluator'] = None
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'ENNDiagnosticsHook':
            hook['plot'] = False

    size = None
    if ds == 'imagenet':
        size = 32
    elif ds == 'tiny_imagenet' and kind == 'enn_local':
        size = 32
    if size:
        _set_input_size(loader.dataset.pipeline, size)
        if net.backbone.type == 'VisionTransformer':
            net.backbone.img_size = size
        if cfg.model.type == 'ENNLocalClassifier':
            cfg.model.input_shape = (3, size, size)

    if kind != 'dense' and not FULL_SIZE:
        if net.backbone.type == 'VisionTransformer':
            net.backbone.arch = dict(VIT_SMALL)
            net.head.in_channels = VIT_SMALL['embed_dims']
        else:
            net.backbone.update(stem_channels=WIDTH, base_channels=WIDTH)
            net.head.in_channels = WIDTH * 4 * 8  # bottleneck expansion, 3 doublings

    cfg.work_dir = str(work_dir)
    # runners built in the same second from one config file would share a message hub
    cfg.experiment_name = f'paper_{uuid.uuid4().hex[:8]}'
    cfg.log_level = 'WARNING'
    return cfg


class Probe(Hook):
    """Parameters and buffers after weight init, the step's outputs."""
    priority = 'VERY_LOW'

    def before_train(self, runner):
        model = runner.model
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.buffers = {n: b.clone() for n, b in model.named_buffers() if 'local_heads' in n}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.outputs = {k: float(torch.as_tensor(v).detach()) for k, v in outputs.items()}


def network_layers(model):
    """Conv2d/Linear modules of the network itself (local heads excluded)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
            and not n.startswith('local_heads')]


# ------------------------------------------------------------------ one iteration each
@pytest.mark.parametrize('rel', CONFIGS)
def test_config_trains_one_iteration(rel, data_roots, cifar_md5_off, tmp_path):
    ds, kind = data_set(rel), method(rel)
    cfg = shrink(load(rel), rel, data_roots[ds], tmp_path)
    runner = Runner.from_cfg(cfg)
    probe = Probe()
    runner.register_hook(probe)
    runner.train()
    assert runner.iter == 1
    model = runner.model

    # the loss of the step is finite
    assert math.isfinite(probe.outputs['loss']), probe.outputs
    # the step changed the classifier and the backbone (not every parameter:
    # the first step leaves those without a gradient and without weight decay
    # as they were, e.g. inside residual blocks whose last BN starts at zero,
    # all of a ViT behind its zero-initialised head, or the bases Q, P of that
    # zero head as an ENN layer, whose λ starts at 0)
    after = dict(model.named_parameters())
    changed = {n for n, p in after.items()
               if p.requires_grad and not torch.equal(p, probe.before[n])}
    assert any(n.startswith('head.') for n in changed)
    assert any(n.startswith('backbone.') for n in changed)

    layers = network_layers(model)
    enn_names = {n for n, _ in enn_mm.enn_modules(model)}
    if kind == 'dense':
        assert not enn_names and type(model).__name__ == 'ImageClassifier'
    else:  # every Conv2d/Linear of the network is an ENN layer, with the penalty on
        assert enn_names and set(layers) == enn_names, sorted(set(layers) ^ enn_names)[:10]
        assert model.enn_options.ortho == 'penalty' and model.enn_options.gamma > 0
    if kind == 'enn':
        assert 'loss_ortho' in probe.outputs

    if kind == 'enn_local':
        K = model.num_blocks
        assert list(runner.optim_wrapper.keys()) == [f'block{k}' for k in range(K)]
        hub = runner.message_hub
        for k in range(K):
            losses = hub.get_scalar(f'train/block{k}.loss').data[0]
            assert len(losses) == 1 and math.isfinite(losses[0]), (k, losses)
            own = set(model.block_param_names(k))
            assert own & changed, f'block {k} did not change'
        for n, b in model.named_buffers():  # frozen local heads stay as they were
            if n in probe.buffers:
                assert torch.equal(b, probe.buffers[n]), n
        # each block ran under its own schedule: on CIFAR, one-cycle (starting at
        # its peak / 25) for the stem and the FC, the optimizer's lr for the others
        lrs = [hub.get_scalar(f'train/block{k}.lr').data[0][0] for k in range(K)]
        base = cfg.optim_wrapper.optimizer.lr
        if isinstance(cfg.param_scheduler, dict):
            for k in range(K):
                (sched, ) = cfg.param_scheduler[f'block{k}'] or [None]
                want = sched['eta_max'] / 25 if sched else base
                assert lrs[k] == pytest.approx(want), (k, lrs[k], want)
        else:
            assert lrs == pytest.approx([base] * K)

    # the config's val side reads the same fixture
    val = copy.deepcopy(_load(rel).val_dataloader.dataset)
    val.update(data_root=data_roots[ds], serialize_data=False)
    init_default_scope('mmpretrain')
    dataset = DATASETS.build(val)
    assert len(dataset) > 0 and dataset[0]['inputs'].ndim == 3


def test_tiny_imagenet_val_labels_follow_the_training_classes(data_roots):
    """meta/val.txt gives each val image the index CustomDataset gives its
    wnid's train/ folder."""
    root = data_roots['tiny_imagenet']
    cfg = _load('tiny_imagenet/resnet50_dense.py')
    init_default_scope('mmpretrain')
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=root, pipeline=[]))
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=root, pipeline=[]))
    assert len(train.CLASSES) == 10 and len(val) == 4  # the fixture's 10 of the 200 classes
    with open(osp.join(root, 'val', 'val_annotations.txt')) as f:
        truth = dict(line.split('\t')[:2] for line in f)
    for info in val.data_list:
        wnid = truth[osp.basename(info['img_path'])]
        assert info['gt_label'] == train.folder_to_idx[wnid]
        assert osp.isfile(info['img_path'])


# ------------------------------------------------------------------ recipes vs the authors' scripts
# (batch, optimizer, lr, T_max, per-iteration, γ, epochs) of the ENN-with-BP table,
# which the dense baselines share.
BP = {
    ('cifar10', 'resnet50'): (512, 1e-3, 200, True, 1e-5, 500),
    ('cifar100', 'resnet50'): (512, 1e-3, 200, False, 1e-5, 500),
    **{(ds, f'resnet{d}'): (400, 1e-4, 200, True, 5e-5, 1000)
       for ds in ('cifar10', 'cifar100') for d in (101, 152)},
    ('tiny_imagenet', 'resnet50'): (64, 1e-3, 200, False, 1e-5, 1000),
    ('tiny_imagenet', 'resnet101'): (64, 1e-3, 500, False, 1e-5, 1000),
    ('tiny_imagenet', 'resnet152'): (64, 1e-3, 500, False, 1e-5, 1000),
    ('imagenet', 'resnet101'): (300, 1e-3, 500, True, 5e-5, 1000),
    ('imagenet', 'resnet152'): (200, 1e-3, 500, True, 5e-5, 1000),
    ('imagenet', 'vit-b16'): (450, 1e-3, 500, True, 5e-5, 1000),
}
CLASSES = dict(cifar10=10, cifar100=100, tiny_imagenet=200, imagenet=1000)
BLOCKS = dict(resnet50=18, resnet101=35, resnet152=52)


def _cosine(scheds, T_max, per_iter):
    assert len(scheds) == 1
    s = scheds[0]
    assert s['type'] == 'CosineAnnealingLR' and s['T_max'] == T_max and s['eta_min'] == 0
    assert s['by_epoch'] is (not per_iter) and 'end' not in s  # runs to the end of training


@pytest.mark.parametrize('rel', CONFIGS)
def test_recipe_matches_spec(rel):
    cfg = _load(rel)
    ds, kind = data_set(rel), method(rel)
    arch = osp.basename(rel).split('_')[0]
    net = inner(cfg.model)
    assert net.head.num_classes == CLASSES[ds]
    if arch.startswith('resnet'):
        assert net.backbone.depth == int(arch[6:])
        # the authors' CIFAR stem, except on ImageNet (MMPretrain's stem, a stated deviation)
        assert net.backbone.type == ('ResNet' if ds == 'imagenet' else 'ResNet_CIFAR')
    else:
        b = net.backbone
        assert (b.type, b.arch, b.patch_size, b.drop_rate) == ('VisionTransformer', 'b', 16, 0.1)
        assert net.head.get('hidden_dim') is None and net.get('train_cfg') is None
    assert net.head.loss.type == 'CrossEntropyLoss'
    # data
    data = cfg.train_dataloader.dataset
    pipeline = [t['type'] for t in data.pipeline]
    if ds in ('cifar10', 'cifar100'):
        assert data.type == ds.upper() and data.data_root == f'data/{ds}'
        assert data.pipeline[0] == dict(type='RandomCrop', crop_size=32, padding=4)
    elif ds == 'tiny_imagenet':
        assert (data.type, data.data_root) == ('CustomDataset', 'data/tiny-imagenet-200')
        assert data.pipeline[1] == dict(type='RandomCrop', crop_size=64, padding=4)
    else:
        assert (data.type, data.data_root) == ('ImageNet', 'data/imagenet')
        assert pipeline == ['LoadImageFromFile', 'ResizeEdge', 'CenterCrop', 'RandomFlip',
                            'PackInputs']
        assert data.pipeline[1]['scale'] == 256 and data.pipeline[2]['crop_size'] == 224
    assert 'RandomFlip' in pipeline
    # the reported number is the final epoch's, the best epoch is kept beside it
    ckpt = cfg.default_hooks.checkpoint
    assert ckpt.save_best == 'accuracy/top1' and ckpt.save_last and cfg.train_cfg.val_interval == 1

    optim = cfg.optim_wrapper
    if kind in ('dense', 'enn'):
        batch, lr, T_max, per_iter, gamma, epochs = BP[ds, arch]
        assert optim.optimizer == dict(type='AdamW', lr=lr, weight_decay=0.01)
        assert 'paramwise_cfg' not in optim and 'clip_grad' not in optim
        _cosine(cfg.param_scheduler, T_max, per_iter)
        if kind == 'dense':
            assert cfg.model.type == 'ImageClassifier' and 'constructor' not in optim
        else:
            assert cfg.model.type == 'ENNModel'
            assert cfg.model.enn == dict(ortho='penalty', gamma=gamma)
            assert optim.constructor == 'ENNOptimWrapperConstructor'
            assert 'enn_mm' in cfg.custom_imports.imports
        assert cfg.train_dataloader.batch_size == batch and cfg.train_cfg.max_epochs == epochs
        return

    # ENN-ℓ
    assert cfg.model.type == 'ENNLocalClassifier' and cfg.model.cuts == 'resnet_block'
    assert cfg.model.model.type == 'ENNModel' and cfg.model.model.enn.ortho == 'penalty'
    assert optim.constructor == 'ENNLocalOptimWrapperConstructor'
    assert optim.block_constructor == 'ENNOptimWrapperConstructor'
    assert set(cfg.custom_imports.imports) == {'enn_mm', 'enn_mm.local'}
    gamma = cfg.model.model.enn.gamma
    if cfg.model.local_head.type == 'ENNFrozenLinearLocalHead':
        # the largest frozen head (on the first stage's output, 256 x H x W) fits
        # the config's budget, so the full-size model builds
        px = cfg.model.input_shape[1]
        largest = (256 * px * px + 1) * CLASSES[ds]
        assert largest <= cfg.model.get('max_head_params', 2**23) < 2 * largest or largest < 2**23
    if ds in ('cifar10', 'cifar100'):
        stem, blocks, fc = (1e-4, 5e-4, 1e-3) if ds == 'cifar10' else (1e-4, 1e-4, 1e-3)
        assert gamma == 1e-6 and cfg.model.local_head == dict(type='ENNFrozenLinearLocalHead')
        assert cfg.model.input_shape == (3, 32, 32)
        assert optim.optimizer == dict(type='AdamW', lr=blocks, weight_decay=0.01)
        K = BLOCKS[arch]
        sched = cfg.param_scheduler
        assert sorted(sched) == sorted(f'block{k}' for k in range(K))
        for k in range(1, K - 1):
            assert sched[f'block{k}'] == []  # constant lr
        for key, base in (('block0', stem), (f'block{K - 1}', fc)):
            (s, ) = sched[key]
            assert s['type'] == 'OneCycleLR' and s['eta_max'] == pytest.approx(5 * base)
            assert s['pct_start'] == 0.35 and (s['begin'], s['end']) == (0, 500)
            assert s['by_epoch'] and s['convert_to_iter_based']
        assert cfg.train_dataloader.batch_size == 512 and cfg.train_cfg.max_epochs == 500
    elif ds == 'tiny_imagenet':
        expected = {
            'resnet50': (5e-5, dict(type='SGD', lr=1e-4, momentum=0.9, nesterov=True,
                                    weight_decay=5e-4)),
            'resnet101': (5e-4, dict(type='SGD', lr=1e-4, momentum=0.0, weight_decay=0.0)),
            'resnet152': (1e-4, dict(type='AdamW', lr=1e-4, weight_decay=0.01)),
        }[arch]
        assert (gamma, optim.optimizer) == expected
        assert cfg.model.local_head == dict(type='ENNFrozenLinearLocalHead')
        assert cfg.model.input_shape == (3, 64, 64)
        _cosine(cfg.param_scheduler, 200, True)
        assert cfg.train_dataloader.batch_size == 64 and cfg.train_cfg.max_epochs == 500
    else:  # ImageNet: the recipe is unknown; ours is the ENN-with-BP one, per block
        batch, lr, T_max, per_iter, bp_gamma, epochs = BP[ds, arch]
        assert gamma == bp_gamma and cfg.model.local_head == dict(type='ENNPoolLinearLocalHead')
        assert cfg.model.input_shape == (3, 224, 224)
        assert optim.optimizer == dict(type='AdamW', lr=lr, weight_decay=0.01)
        _cosine(cfg.param_scheduler, T_max, per_iter)
        assert cfg.train_dataloader.batch_size == batch and cfg.train_cfg.max_epochs == epochs


def test_every_setting_has_its_configs():
    expected = {f'{ds}/resnet{d}_{k}.py' for ds in ('cifar10', 'cifar100', 'tiny_imagenet')
                for d in (50, 101, 152) for k in ('dense', 'enn', 'enn_local')}
    expected |= {f'imagenet/{a}_{k}.py' for a in ('resnet101', 'resnet152', 'vit-b16')
                 for k in ('dense', 'enn')}
    expected |= {f'imagenet/resnet{d}_enn_local.py' for d in (101, 152)}
    assert expected <= set(CONFIGS), sorted(expected - set(CONFIGS))

"""What several test modules share, in one plain module (``from helpers
import ...``; tests/ is on sys.path as the folder of the root conftest.py):
the repository root, writers of tiny data sets in their real formats, the
shrunk configs and models the tests build, the ENN-ℓ pipeline launcher and
the brute-force retrieval references."""
import copy
import gzip
import itertools
import os
import os.path as osp
import socket
import struct
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ------------------------------------------------------------------ data sets in their real formats
def write_idx(folder, prefix, images, labels, compress=False):
    """Write images/labels in the IDX format of (Fashion-)MNIST."""
    n, h, w = images.shape
    opener = gzip.open if compress else open
    suffix = '.gz' if compress else ''
    with opener(osp.join(folder, f'{prefix}-images-idx3-ubyte{suffix}'), 'wb') as f:
        f.write(struct.pack('>IIII', 2051, n, h, w) + images.astype(np.uint8).tobytes())
    with opener(osp.join(folder, f'{prefix}-labels-idx1-ubyte{suffix}'), 'wb') as f:
        f.write(struct.pack('>II', 2049, n) + labels.astype(np.uint8).tobytes())


def class_images(n, seed, size=28):
    """Learnable images: a central square whose brightness encodes the class
    (survives global pooling, so even a tiny model learns it in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    imgs = rng.integers(0, 40, size=(n, size, size))
    for i, y in enumerate(labels):
        imgs[i, 6:22, 6:22] += 20 * y + 20
    return imgs.clip(0, 255).astype(np.uint8), labels


def write_cifar(root, kind='cifar10', per_file=4, seed=0):
    """A tiny CIFAR-10/100 folder in the format of the python versions of the
    data sets (cifar-10-python.tar.gz / cifar-100-python.tar.gz, unpacked):
    pickled dicts of uint8 rows (3x32x32, channel-major) with their labels,
    and the meta file. The content is random, so the md5 sums MMPretrain's
    CIFAR datasets check do not match it."""
    import pickle

    from mmpretrain.datasets.categories import CIFAR10_CATEGORIES, CIFAR100_CATEGORIES

    rng = np.random.default_rng(seed)
    if kind == 'cifar10':
        folder = 'cifar-10-batches-py'
        names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
        classes, label_key = CIFAR10_CATEGORIES, 'labels'
        meta_name = 'batches.meta'
        meta = {'num_cases_per_batch': per_file, 'label_names': list(classes), 'num_vis': 3072}
    elif kind == 'cifar100':
        folder, names = 'cifar-100-python', ['train', 'test']
        classes, label_key = CIFAR100_CATEGORIES, 'fine_labels'
        meta_name = 'meta'
        meta = {'fine_label_names': list(classes),
                'coarse_label_names': [f'superclass_{i}' for i in range(20)]}
    else:
        raise ValueError(kind)
    os.makedirs(osp.join(root, folder), exist_ok=True)
    for name in names:
        labels = rng.integers(0, len(classes), size=per_file)
        entry = {'batch_label': f'{name} of the test fixture',
                 label_key: [int(y) for y in labels],
                 'data': rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
                 'filenames': [f'{name}_{i}.png' for i in range(per_file)]}
        if kind == 'cifar100':
            entry['coarse_labels'] = [int(y) // 5 for y in labels]
        with open(osp.join(root, folder, name), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    with open(osp.join(root, folder, meta_name), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return str(root)


def write_jpeg(path, h, w, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, 'JPEG')


def fake_wnids(n, seed=0):
    """n distinct WordNet-id-like names, in a shuffled (unsorted) order."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**8, size=n, replace=False)
    return [f'n{i:08d}' for i in ids]


def write_tiny_imagenet(root, classes=200, train_per_class=1, val_images=4):
    """A tiny tiny-imagenet-200 folder as the zip unpacks: wnids.txt,
    words.txt, train/<wnid>/images/<wnid>_<i>.JPEG (+ <wnid>_boxes.txt),
    val/images/val_<i>.JPEG and val/val_annotations.txt; 64x64 JPEGs."""
    wnids = fake_wnids(classes)
    with open(osp.join(root, 'wnids.txt'), 'w') as f:
        f.writelines(f'{w}\n' for w in wnids)
    with open(osp.join(root, 'words.txt'), 'w') as f:
        f.writelines(f'{w}\tclass {i}\n' for i, w in enumerate(wnids))
    for c, w in enumerate(wnids):
        boxes = []
        for i in range(train_per_class):
            write_jpeg(osp.join(root, 'train', w, 'images', f'{w}_{i}.JPEG'), 64, 64,
                       seed=c * 1000 + i)
            boxes.append(f'{w}_{i}.JPEG\t0\t0\t63\t63\n')
        with open(osp.join(root, 'train', w, f'{w}_boxes.txt'), 'w') as f:
            f.writelines(boxes)
    lines = []
    for i in range(val_images):
        write_jpeg(osp.join(root, 'val', 'images', f'val_{i}.JPEG'), 64, 64, seed=10**6 + i)
        lines.append(f'val_{i}.JPEG\t{wnids[(7 * i) % classes]}\t0\t0\t63\t63\n')
    with open(osp.join(root, 'val', 'val_annotations.txt'), 'w') as f:
        f.writelines(lines)
    return wnids


def write_imagenet(root, classes=2, per_class=2, val_images=2, size=(40, 48)):
    """A tiny ImageNet folder in the layout MMPretrain's ImageNet dataset
    reads: train/<wnid>/<wnid>_<i>.JPEG, val/ILSVRC2012_val_<n>.JPEG and the
    lists meta/train.txt, meta/val.txt (`<path> <label>`)."""
    wnids = sorted(fake_wnids(classes, seed=1))
    train, val = [], []
    for c, w in enumerate(wnids):
        for i in range(per_class):
            name = f'{w}/{w}_{i}.JPEG'
            write_jpeg(osp.join(root, 'train', name), *size, seed=c * 100 + i)
            train.append(f'{name} {c}\n')
    for i in range(val_images):
        name = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
        write_jpeg(osp.join(root, 'val', name), *size, seed=10**5 + i)
        val.append(f'{name} {i % classes}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', 'train.txt'), 'w') as f:
        f.writelines(train)
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.writelines(val)
    return str(root)


# ------------------------------------------------------------------ processes
def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the pure-PyTorch core
def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def mlp():
    return nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 8), nn.GELU(), nn.Linear(8, 5))


def square_mlp():
    return nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                         nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


# ------------------------------------------------------------------ ENNModel through the Runner
# the paper's penalty: these tests follow loss_ortho through training
ENN_CFG = osp.join(REPO, 'configs/enn/resnet18w16_fmnist_penalty.py')
DENSE_CFG = osp.join(REPO, 'configs/baseline/resnet18w16_fmnist.py')
DEFAULT_CFG = osp.join(REPO, 'configs/enn/resnet18w16_fmnist.py')  # the demo: the defaults


def tiny_enn_cfg(path, data_root, work_dir, epochs=2, **enn):
    """The demo config, shrunk: width 8, two stages, 64 images, no augmentation."""
    cfg = Config.fromfile(path)
    model = cfg.model.model if cfg.model.type == 'ENNModel' else cfg.model
    model.backbone.update(stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                          dilations=(1, 1), out_indices=(1, ))
    model.head.in_channels = 16
    if enn:
        cfg.model.enn.update(enn)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=16, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = data_root
    cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    cfg.optim_wrapper.optimizer.lr = 3e-2  # a visible drop within a few steps
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=20)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.work_dir = str(work_dir)
    # runners built in the same second from one config file would otherwise
    # share a message hub (and their loss histories)
    cfg.experiment_name = f'{osp.basename(path)}_{uuid.uuid4().hex[:8]}'
    cfg.log_level = 'WARNING'
    return cfg


def logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x, mode='tensor')


# ------------------------------------------------------------------ ENN-ℓ
LOCAL_CFG = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist.py')
LOCAL_DENSE_CFG = osp.join(REPO, 'configs/enn_local/resnet18w16_fmnist_dense.py')
# weight_decay given: the ENN constructor's decay rules need a base value
SGD = dict(constructor='ENNLocalOptimWrapperConstructor',
           optimizer=dict(type='SGD', lr=0.1, weight_decay=0.0))
_RUN_IDS = itertools.count()


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny models run as fast on one thread, and a second thread on a busy
    machine can make them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inner(model_cfg):
    """The ImageClassifier config inside ENNLocalClassifier / ENNModel."""
    while model_cfg.type != 'ImageClassifier':
        model_cfg = model_cfg.model
    return model_cfg


def tiny_local_cfg(path, data_root, work_dir, epochs=2, **local):
    """A repo config, shrunk: width 8, two stages (6 blocks with the paper's
    split), 64 images, no augmentation, 4 iterations an epoch."""
    cfg = Config.fromfile(path)
    inner = _inner(cfg.model)
    inner.backbone.update(stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                          dilations=(1, 1), out_indices=(1, ))
    inner.head.in_channels = 16
    if cfg.model.type == 'ENNLocalClassifier':
        cfg.model.update(local)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=16, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = data_root
    cfg.train_dataloader.dataset.pipeline = [dict(type='PackInputs')]
    cfg.optim_wrapper.optimizer.lr = 3e-2
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=20)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.custom_hooks = []  # no diagnostics plots: speed
    cfg.work_dir = str(work_dir)
    # the Runner names its message hub after the config file and the second:
    # two runs started in one second would share their logs
    cfg.experiment_name = f'test_local_{next(_RUN_IDS)}'
    cfg.log_level = 'WARNING'
    return cfg


def build(path, **local):
    init_default_scope('mmpretrain')
    cfg = tiny_local_cfg(path, '', '', **local)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(inputs=torch.rand(n, 1, 28, 28, generator=g) * 255,
                data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


TINY = dict(type='ImageClassifier',
            backbone=dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=8,
                          base_channels=8, num_stages=2, strides=(1, 2), dilations=(1, 1),
                          out_indices=(1, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=10, in_channels=16))
# a 4-layer ViT on 32-px RGB inputs (16 patches of 8 px + the cls token)
TINY_VIT = dict(type='ImageClassifier',
                backbone=dict(type='VisionTransformer', img_size=32, patch_size=8,
                              arch=dict(embed_dims=32, num_layers=4, num_heads=2,
                                        feedforward_channels=64)),
                head=dict(type='VisionTransformerClsHead', num_classes=10, in_channels=32))


def local(**kw):
    init_default_scope('mmpretrain')
    cfg = dict(type='ENNLocalClassifier', model=copy.deepcopy(TINY), input_shape=(1, 28, 28))
    cfg.update(kw)
    return MODELS.build(cfg)


INFOPRO = [dict(type='ENNClassificationObjective', weight=dict(start=0.5, end=1.0)),
           dict(type='ENNReconstructionObjective', weight=dict(start=1.0, end=0.0))]


class CheckedWrapper(OptimWrapper):
    """An SGD wrapper that, before each step, checks which parameters the
    block's loss reaches: only its own (block, head, objectives)."""

    def __init__(self, model, k, log):
        self.model, self.k, self.log = model, k, log
        params = dict(model.named_parameters())
        super().__init__(torch.optim.SGD([params[n] for n in model.block_param_names(k)],
                                         lr=0.05))

    def update_params(self, loss, **kwargs):
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True,
                                    retain_graph=True)
        self.log[self.k] = {n for (n, _), g in zip(named, grads) if g is not None}
        super().update_params(loss, **kwargs)


# ------------------------------------------------------------------ the ENN-ℓ pipeline
PIPE_CFG = os.path.join(REPO, 'configs/enn_local/resnet18w16_fmnist_pipeline.py')


def pipe_cfg(root, work_dir, epochs, stages=2, **wrapper):
    """The shipped pipeline config, shrunk as tiny_local_cfg shrinks its base."""
    shipped = Config.fromfile(PIPE_CFG).train_cfg
    cfg = tiny_local_cfg(PIPE_CFG, root, work_dir, epochs=epochs)
    assert cfg.model_wrapper_cfg.type == 'ENNPipelineParallel'
    cfg.model_wrapper_cfg.update(stages=stages, **wrapper)
    # the shipped loop config, only shorter (tiny_local_cfg set a plain one)
    cfg.train_cfg = dict(shipped, max_epochs=epochs, val_interval=epochs)
    cfg.log_level = 'INFO'  # the stage assignment and the epoch summaries
    return cfg


def launch(cfg, tmp_path, nproc, name, extra=(), wait=True, env=None):
    """Start ``nproc`` ranks of tools/train.py as torchrun would (env://);
    ``env`` overrides variables of every rank."""
    path = str(tmp_path / f'{name}.py')
    cfg.dump(path)
    port = str(free_port())
    procs, env_override = [], dict(env or {})
    for rank in range(nproc):
        env = dict(os.environ, OMP_NUM_THREADS='1', MASTER_ADDR='127.0.0.1', MASTER_PORT=port,
                   RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc),
                   PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests')]))
        env.update(env_override)
        procs.append(subprocess.Popen(
            [sys.executable, 'tools/train.py', path, *extra,
             *(['--launcher', 'pytorch'] if nproc > 1 else [])],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    if not wait:
        return procs
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def load(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def assert_same_checkpoint(got, want, atol=0.0):
    """Same weights and the same optimizer state for every block."""
    assert got['state_dict'].keys() == want['state_dict'].keys()
    for k, v in want['state_dict'].items():
        assert torch.allclose(got['state_dict'][k], v, rtol=0, atol=atol), k
    assert got['optimizer'].keys() == want['optimizer'].keys()
    for key in want['optimizer']:
        w, g = want['optimizer'][key]['state'], got['optimizer'][key]['state']
        assert g.keys() == w.keys() and w, key
        for i in w:
            for name, v in w[i].items():
                if torch.is_tensor(v):
                    assert torch.allclose(g[i][name], v, rtol=0, atol=atol), (key, i, name)


# ------------------------------------------------------------------ retrieval references
# A brute-force numpy implementation (full score matrix in float64, stable
# sort = the documented rank rule); tests compare with it and with MMPretrain's
# own RetrievalRecall / RetrievalAveragePrecision where definitions coincide.
# Data with ties use small integer (or exactly unit-norm) vectors so every
# score is exact in float32 and float64 alike.
ALL = ('Recall', 'Precision', 'mAP', 'AP', 'mAP@R')
# MMPretrain's own retrieval metrics (the reference) use APIs numpy deprecates
RETRIEVAL_WARNINGS = [
    pytest.mark.filterwarnings('ignore:.*in1d.*:DeprecationWarning'),
    pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')]


def ref_scores(q, g, similarity):
    """The rank rule's float64 scores (docs/retrieval.md), the full matrix:
    rows divided by their float64 norm for cosine, sums over the dimension
    by one einsum kernel for every pair (so equal pairs score equal bits)."""
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    if similarity == 'cosine':
        q = q / np.where(np.linalg.norm(q, axis=1) == 0, 1,
                         np.sqrt(np.einsum('ij,ij->i', q, q)))[:, None]
        g = g / np.where(np.linalg.norm(g, axis=1) == 0, 1,
                         np.sqrt(np.einsum('ij,ij->i', g, g)))[:, None]
    if similarity == 'l2':
        return np.stack([-np.einsum('jd,jd->j', g - row, g - row) for row in q])
    return np.einsum('id,jd->ij', q, g)


def ref_ranking(scores_row, exclude=None):
    """Gallery ids by descending score, ties by ascending id (the rule)."""
    ids = np.arange(len(scores_row))
    if exclude is not None:
        ids = ids[ids != exclude]
    return ids[np.lexsort((ids, -scores_row[ids]))]


def ref_metrics(scores, relevant_sets, topk, exclude_self=False):
    """Every metric by its textbook definition, one query at a time."""
    vals = {}
    for i, rel_set in enumerate(relevant_sets):
        rel_set = set(rel_set) - ({i} if exclude_self else set())
        R = len(rel_set)
        if R == 0:
            continue
        order = ref_ranking(scores[i], i if exclude_self else None)
        rel = np.array([j in rel_set for j in order], dtype=float)
        prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        for k in topk:
            vals.setdefault(f'Recall@{k}', []).append(rel[:k].max())
            vals.setdefault(f'Precision@{k}', []).append(rel[:k].sum() / k)
            vals.setdefault(f'mAP@{k}', []).append((prec[:k] * rel[:k]).sum() / R)
            vals.setdefault(f'AP@{k}', []).append((prec[:k] * rel[:k]).sum() / min(k, R))
        vals.setdefault('mAP@R', []).append((prec[:R] * rel[:R]).sum() / R)
    return {k: 100 * np.mean(v) for k, v in vals.items()}


def label_sets(q_labels, g_labels):
    return [np.flatnonzero(g_labels == c) for c in q_labels]


def assert_close(ours, ref, tol=1e-9):
    for k, v in ref.items():
        assert k in ours, k
        assert abs(ours[k] - v) <= tol, (k, ours[k], v)


def tie_data(rng, n, dim=6, lo=-2, hi=3):
    x = rng.integers(lo, hi, size=(n, dim)).astype(np.float32)
    x[np.abs(x).sum(1) == 0, 0] = 1
    return x


def unit_tie_data(rng, n, dim=8):
    """Vectors with exactly four entries ±0.5: unit norm exactly, many ties."""
    x = np.zeros((n, dim), np.float32)
    for row in x:
        cols = rng.choice(dim, 4, replace=False)
        row[cols] = rng.choice([-0.5, 0.5], 4)
    return x


def ref_image_text(img, txt, owner, topk):
    S = ref_scores(img, txt, 'cosine')
    out = {}
    i2t = ref_metrics(S, [np.flatnonzero(owner == i) for i in range(len(img))], topk)
    t2i = ref_metrics(S.T, [[o] for o in owner], topk)
    out.update({f'i2t/Recall@{k}': i2t[f'Recall@{k}'] for k in topk})
    out.update({f't2i/Recall@{k}': t2i[f'Recall@{k}'] for k in topk})
    return out


def shard_like_ddp(n, world, batch, shuffle=False, seed=0):
    """Per-rank batches of dataset indices as DefaultSampler yields them."""
    ranks = []
    for rank in range(world):
        sampler = DefaultSampler(list(range(n)), shuffle=shuffle, seed=seed)
        sampler.rank, sampler.world_size = rank, world
        sampler.num_samples = -(-n // world)
        sampler.total_size = sampler.num_samples * world
        idx = list(sampler)
        ranks.append([idx[i:i + batch] for i in range(0, len(idx), batch)])
    return ranks


def samples_for(indices, feats, labels, key='image_feat'):
    return [{key: torch.from_numpy(feats[i]), 'sample_idx': i,
             'gt_label': torch.tensor([int(labels[i])])} for i in indices]


IT_METRIC = dict(type='FaissImageTextRetrievalMetric', topk=(1, 2, 3))


def full_and_resumed(make_cfg, tmp_path, epochs: int = 3, split: int = 1):
    """Train ``epochs`` epochs in one go, and in another work dir ``split``
    epochs, then resume that run to ``epochs``. ``make_cfg(work_dir,
    epochs)`` gives each config. Returns the two runners (full, resumed)."""
    full = Runner.from_cfg(make_cfg(tmp_path / 'full', epochs))
    full.train()
    Runner.from_cfg(make_cfg(tmp_path / 'half', split)).train()
    cfg = make_cfg(tmp_path / 'half', epochs)
    cfg.resume = True
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    return full, resumed


def tiny_dual_encoder_cfg(path, work_dir, batch_size, epochs):
    """A shipped ResNet-18w16 ECLIP config with a 2-stage width-8 image
    tower, a 16-d joint space, no schedule, a checkpoint never and a log
    line every step; data settings are the caller's."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    model = cfg.model.model if cfg.model.type == 'ENNModel' else cfg.model
    model.image_encoder[0].update(stem_channels=8, base_channels=8, num_stages=2,
                                  strides=(1, 2), dilations=(1, 1), out_indices=(1, ))
    model.image_dim = 16
    model.embed_dim = 16
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=epochs, val_interval=epochs)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=100, save_last=False)
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return cfg, model

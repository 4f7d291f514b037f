"""enn_mm.evaluation.retrieval_loop and evaluate: the retrieval configs
through the Runner (train, validate, test) and tools/retrieval_eval.py.

References: brute force in helpers.py.
"""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, MODELS

import enn_mm  # noqa: F401

from helpers import REPO, RETRIEVAL_WARNINGS, assert_close, label_sets, ref_metrics, ref_scores

pytestmark = RETRIEVAL_WARNINGS
init_default_scope('mmpretrain')


def fmnist_cfg(path, data_root, work_dir):
    """The retrieval config, shrunk to the tiny Fashion-MNIST fixture."""
    cfg = Config.fromfile(path)
    model = cfg.model.model if cfg.model.type == 'ENNModel' else cfg.model
    model.backbone.update(stem_channels=8, base_channels=8, num_stages=2, strides=(1, 2),
                          dilations=(1, 1), out_indices=(1, ))
    model.head.in_channels = 16
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=16, num_workers=0, persistent_workers=False)
        ds = cfg[loader].dataset
        (ds.dataset if ds.type == 'ENNClassSubset' else ds).data_root = data_root
    cfg.test_evaluator.topk = (1, 5)
    cfg.val_evaluator.topk = (1, 5)
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return cfg


def assert_runner_equals_reference(runner, cfg):
    """The Runner's test metrics equal the brute-force reference on the
    model's own embeddings of the test set."""
    metrics = runner.test()
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, batch_size=100))
    batch = runner.model.data_preprocessor(next(iter(loader)), False)
    with torch.no_grad():
        feats = runner.model.extract_feat(batch['inputs'])[-1].numpy()
    labels = np.array([int(s.gt_label) for s in batch['data_samples']])
    ref = ref_metrics(ref_scores(feats, feats, 'cosine'), label_sets(labels, labels), (1, 5),
                      exclude_self=True)
    assert_close({k.split('/', 1)[1]: v for k, v in metrics.items()}, ref, tol=1e-4)


def test_fmnist_config_train_validate_test(fmnist_root, tmp_path):
    """ENN retrieval config: training validates with FaissRetrievalValLoop
    (save_best on mAP@R), testing equals the reference on extract_feat."""
    cfg = fmnist_cfg(osp.join(REPO, 'configs/retrieval/enn_resnet18w16_fmnist_retrieval.py'),
                     fmnist_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert any(f.startswith('best_retrieval_mAP@R') for f in os.listdir(tmp_path))
    assert_runner_equals_reference(runner, cfg)


def test_unseen_classes_config(fmnist_root, tmp_path):
    cfg = fmnist_cfg(osp.join(REPO, 'configs/retrieval/resnet18w16_fmnist_unseen.py'),
                     fmnist_root, tmp_path)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert set(train.get_gt_labels()) == {0, 1, 2, 3, 4}
    assert set(test.get_gt_labels()) == {5, 6, 7, 8, 9} and len(test) == 20
    assert test.get_data_info(3)['sample_idx'] == 3
    assert cfg.model.head.num_classes == 5
    # the unseen classes retrieved among themselves
    assert_runner_equals_reference(Runner.from_cfg(cfg), cfg)


def seeded_checkpoint(cfg, path, seed=0):
    """A checkpoint of ``cfg.model`` with seeded random weights (what the
    tool must reproduce does not depend on training)."""
    from mmengine.runner import save_checkpoint
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    save_checkpoint(model.state_dict(), str(path))
    return str(path)


def independent_embeddings(cfg, checkpoint):
    """The test set's embeddings as ``tools/test.py``'s model computes them:
    MMPretrain's own ``get_model`` (the config's data_preprocessor injected),
    mmengine's loader, the model's preprocessor and ``extract_feat``."""
    from mmengine.runner import load_checkpoint
    from mmpretrain.apis import get_model
    model = get_model(cfg).eval()
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, batch_size=1000))
    batch = model.data_preprocessor(next(iter(loader)), False)
    with torch.no_grad():
        feats = model.extract_feat(batch['inputs'])[-1].numpy()
    return feats, np.array([int(s.gt_label) for s in batch['data_samples']])


def run_retrieval_tool(monkeypatch, cfg_path, checkpoint, out, *options):
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    import retrieval_eval
    monkeypatch.setattr(sys, 'argv', ['retrieval_eval.py', cfg_path, checkpoint, '--work-dir',
                                      str(out), *options])
    retrieval_eval.main()


def test_retrieval_eval_tool(fmnist_root, tmp_path, monkeypatch, capsys):
    """The tool embeds what tools/test.py's model embeds (the config's
    normalizing data_preprocessor included) and scores it by the rank rule."""
    cfg_path = osp.join(REPO, 'configs/retrieval/resnet18w16_fmnist_retrieval.py')
    data = [f'test_dataloader.dataset.data_root={fmnist_root}',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    cfg = Config.fromfile(cfg_path)
    cfg.merge_from_dict({'test_dataloader.dataset.data_root': fmnist_root,
                         'test_dataloader.num_workers': 0,
                         'test_dataloader.persistent_workers': False})
    assert cfg.data_preprocessor.std != [1.0]  # a preprocessor that matters
    ckpt = seeded_checkpoint(cfg, tmp_path / 'model.pth')
    out = tmp_path / 'out'
    run_retrieval_tool(monkeypatch, cfg_path, ckpt, out, '--save-feats', '--save-index',
                       '--curve-k', '30', '--device', 'cpu', '--cfg-options', *data,
                       'test_evaluator.topk=(1,5,10)')
    assert {'metrics.json', 'recall_curve.png', 'recall_curve.json', 'query_feats.npy',
            'query_labels.npy', 'gallery.index'} <= set(os.listdir(out))
    summary = json.loads((out / 'metrics.json').read_text())
    assert summary['exact'] and summary['embed_seconds'] > 0 and summary['search_seconds'] > 0
    feats, labels = independent_embeddings(cfg, ckpt)
    assert feats.shape == (40, 64)
    np.testing.assert_allclose(np.load(out / 'query_feats.npy'), feats, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(out / 'query_labels.npy'), labels)
    ref = ref_metrics(ref_scores(feats, feats, 'cosine'), label_sets(labels, labels),
                      (1, 5, 10, 30), exclude_self=True)
    assert_close(summary['metrics'], {k: ref[k] for k in summary['metrics']}, tol=1e-9)
    curve = json.loads((out / 'recall_curve.json').read_text())
    assert abs(curve['Recall@30'] - ref['Recall@30']) <= 1e-9
    import faiss
    assert faiss.read_index(str(out / 'gallery.index')).ntotal == 40
    assert 'Recall' in capsys.readouterr().out


def test_retrieval_eval_tool_refuses_a_checkpoint_of_another_model(fmnist_root, tmp_path,
                                                                   monkeypatch):
    """An ENN checkpoint given with the dense config: a message naming the
    fix, not a table computed from a model whose weights never loaded."""
    enn_path = osp.join(REPO, 'configs/retrieval/enn_resnet18w16_fmnist_retrieval.py')
    ckpt = seeded_checkpoint(Config.fromfile(enn_path), tmp_path / 'enn.pth')
    dense_path = osp.join(REPO, 'configs/retrieval/resnet18w16_fmnist_retrieval.py')
    with pytest.raises(SystemExit) as err:
        run_retrieval_tool(monkeypatch, dense_path, ckpt, tmp_path / 'out', '--cfg-options',
                           f'test_dataloader.dataset.data_root={fmnist_root}')
    assert 'is an ENN checkpoint' in str(err.value) and 'export_dense.py' in str(err.value)
    assert not (tmp_path / 'out' / 'metrics.json').exists()

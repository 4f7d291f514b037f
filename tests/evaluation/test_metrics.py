"""enn_mm.evaluation's metric classes (retrieval_metric, image_text_metric,
gather): samples as RetrievalTestLoop gives them, sampler padding dropped on
gather, a real 2-process gloo run, bad input, fallbacks, a gallery streamed
from a memmap.

References: brute force in helpers.py and MMPretrain's own metrics.
"""
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.dataset import DefaultSampler
from mmengine.registry import init_default_scope
from mmpretrain.evaluation import RetrievalRecall
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample

import enn_mm  # noqa: F401
import enn_mm.evaluation as ev

from helpers import (
    ALL,
    IT_METRIC,
    RETRIEVAL_WARNINGS,
    assert_close,
    ref_image_text,
    ref_metrics,
    samples_for,
    shard_like_ddp,
)

pytestmark = RETRIEVAL_WARNINGS
init_default_scope('mmpretrain')


def test_image_text_metric_score_mode_as_retrieval_test_loop():
    """Samples as MMPretrain's predict_all gives them to RetrievalTestLoop."""
    rng = np.random.default_rng(8)
    scores = rng.integers(0, 6, size=(32, 90)).astype(np.float32)  # ties
    gts = [rng.choice(90, 3, replace=False) for _ in range(32)]
    metric = METRICS.build(dict(type='FaissImageTextRetrievalMetric', topk=(1, 5, 10)))
    samples = [DataSample().set_gt_label(g.tolist()).set_pred_score(torch.from_numpy(s))
               for s, g in zip(scores, gts)]
    metric.process(None, [d.to_dict() for d in samples])
    ours = metric.evaluate(32)
    ref = ref_metrics(scores.astype(np.float64), gts, (1, 5, 10))
    for k in (1, 5, 10):
        assert abs(ours[f'retrieval/Recall@{k}'] - ref[f'Recall@{k}']) <= 1e-9
    cont = torch.from_numpy(rng.standard_normal((32, 90)).astype(np.float32))
    samples = [DataSample().set_gt_label(g.tolist()).set_pred_score(s)
               for s, g in zip(cont, gts)]
    metric.process(None, [d.to_dict() for d in samples])
    ours = metric.evaluate(32)
    theirs = RetrievalRecall(topk=(1, 5, 10))
    theirs.process(None, [d.to_dict() for d in samples])
    for k, v in theirs.evaluate(32).items():
        assert abs(ours[k] - v) <= 1e-6


# ---------------------------------------------------------- DDP correctness
@pytest.mark.parametrize('world,batch,shuffle', [(2, 4, False), (3, 5, True), (4, 1, False)])
def test_gather_drops_sampler_padding(world, batch, shuffle):
    """Padded per-rank shards (in any arrival order) give the single-process
    numbers; a missing sample is an error, not a wrong number."""
    rng = np.random.default_rng(9)
    n = 37  # not divisible by the world size: the sampler pads
    q, ql = rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n)
    g, gl = rng.standard_normal((23, 8)).astype(np.float32), rng.integers(0, 4, 23)
    single = ev.retrieval_metrics(q, g, ql, gl, topk=(1, 5))

    metric = METRICS.build(dict(type='FaissRetrievalMetric', topk=(1, 5),
                                gallery=dict(dataset=None)))
    q_parts, g_parts = [], []
    for rank_batches in shard_like_ddp(n, world, batch, shuffle):
        for b in rank_batches:
            metric.process(None, samples_for(b, q, ql))
    for rank_batches in shard_like_ddp(23, world, batch, shuffle, seed=1):
        for b in rank_batches:
            metric.add_gallery(samples_for(b, g, gl))
    q_parts, g_parts = metric.results[::-1], metric._gallery_parts[::-1]
    metric._gallery_size = 23
    padded = sum(len(p['idx']) for p in q_parts)
    assert padded > n or world == 1 or n % world == 0
    ours = metric.compute_from_parts(q_parts, g_parts, n)
    assert_close(ours, single, tol=1e-12)
    lost = [p for p in q_parts if n - 1 not in p['idx']]  # never a padding repeat
    with pytest.raises(RuntimeError, match='distinct query samples'):
        metric.compute_from_parts(lost, g_parts, n)


def _gloo_worker(rank, world, tmp, n, n_gallery):
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp}/init',
                                         rank=rank, world_size=world)
    rng = np.random.default_rng(10)
    q, ql = rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n)
    g, gl = rng.standard_normal((n_gallery, 8)).astype(np.float32), rng.integers(0, 4, n_gallery)
    metric = METRICS.build(dict(type='FaissRetrievalMetric', topk=(1, 5),
                                gallery=dict(dataset=None), collect_dir=f'{tmp}/collect'))
    metric.reset_gallery(n_gallery)
    for idx in np.array_split(list(DefaultSampler(list(range(n_gallery)), shuffle=False)), 3):
        metric.add_gallery(samples_for(idx.tolist(), g, gl))
    for idx in np.array_split(list(DefaultSampler(list(range(n)), shuffle=True, seed=3)), 4):
        metric.process(None, samples_for(idx.tolist(), q, ql))
    result = metric.evaluate(n)
    with open(f'{tmp}/rank{rank}.json', 'w') as f:
        json.dump(result, f)
    torch.distributed.destroy_process_group()


def test_real_two_process_gloo_run(tmp_path):
    n, n_gallery = 21, 17
    mp.spawn(_gloo_worker, args=(2, str(tmp_path), n, n_gallery), nprocs=2)
    rng = np.random.default_rng(10)
    q, ql = rng.standard_normal((n, 8)).astype(np.float32), rng.integers(0, 4, n)
    g, gl = rng.standard_normal((n_gallery, 8)).astype(np.float32), rng.integers(0, 4, n_gallery)
    single = ev.retrieval_metrics(q, g, ql, gl, topk=(1, 5))
    for rank in range(2):  # the main process's numbers, broadcast to all
        with open(tmp_path / f'rank{rank}.json') as f:
            got = json.load(f)
        assert_close({k.split('/', 1)[1]: v for k, v in got.items()}, single, tol=1e-12)


def test_image_text_gather_drops_sampler_padding():
    """Image-text embeddings from padded, reordered rank shards: images are
    keyed by image_id, captions by gt_text_id, each kept once."""
    rng = np.random.default_rng(14)
    n_img, caps = 11, [3, 1, 2, 5, 2, 2, 1, 4, 3, 2, 2]
    img = rng.standard_normal((n_img, 6)).astype(np.float32)
    txt = rng.standard_normal((sum(caps), 6)).astype(np.float32)
    owner = np.repeat(np.arange(n_img), caps)
    first = np.concatenate([[0], np.cumsum(caps)])

    def sample(i):
        ids = list(range(first[i], first[i + 1]))
        return {'image_feat': torch.from_numpy(img[i]), 'image_id': i,
                'text': [f'caption {j}' for j in ids], 'gt_text_id': ids,
                'text_feat': torch.from_numpy(txt[ids])}
    metric = METRICS.build(IT_METRIC)
    for rank_batches in shard_like_ddp(n_img, 4, 2)[::-1]:
        for b in rank_batches:
            metric.process(None, [sample(i) for i in b])
    metric.text_size = len(txt)
    got = metric.evaluate(n_img)
    ref = ev.image_text_retrieval_metrics(img, txt, owner, topk=(1, 2, 3))
    assert_close({k.split('/', 1)[1]: v for k, v in got.items()}, ref, tol=1e-12)
    assert_close(ref, ref_image_text(img, txt, owner, (1, 2, 3)))


# ---------------------------------------------------------------- bad input
def test_bad_input_errors():
    rng = np.random.default_rng(11)
    g, gl = rng.standard_normal((20, 4)).astype(np.float32), np.arange(20) % 3
    q, ql = rng.standard_normal((5, 4)).astype(np.float32), np.arange(5) % 3
    bad = q.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match='NaN/inf.*row 2'):
        ev.retrieval_metrics(bad, g, ql, gl)
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match='NaN/inf'):
        ev.retrieval_metrics(q, np.vstack([g, bad]), ql, np.arange(25) % 3)
    with pytest.raises(ValueError, match='dimension 3 but the other side has 4'):
        ev.retrieval_metrics(q[:, :3], g, ql, gl)
    with pytest.raises(ValueError, match='empty'):
        ev.retrieval_metrics(q, g[:0], ql, gl[:0])
    with pytest.raises(ValueError, match='top-50.*only 20'):
        ev.retrieval_metrics(q, g, ql, gl, topk=(1, 50))
    with pytest.raises(ValueError, match='only 19 candidates.*self excluded'):
        ev.retrieval_metrics(g, None, gl, topk=20)
    with pytest.raises(ValueError, match='labels are missing'):
        ev.retrieval_metrics(q, g, ql, None)
    with pytest.raises(ValueError, match='labels are missing'):
        ev.retrieval_metrics(q, g)
    with pytest.raises(ValueError, match='non-integer or NaN'):
        ev.retrieval_metrics(q, g, np.array([0, 1, np.nan, 1, 2]), gl)
    with pytest.raises(ValueError, match="faiss rejects the index string 'IVFzz"):
        ev.retrieval_metrics(q, g, ql, gl, index='IVFzz,Flat')
    with pytest.raises(ValueError, match='topk must be a positive'):
        ev.retrieval_metrics(q, g, ql, gl, topk=0)
    with pytest.raises(ValueError, match='unknown retrieval metrics'):
        ev.retrieval_metrics(q, g, ql, gl, metric_names=('NDCG', ))
    with pytest.raises(ValueError, match='no query has a relevant item'):
        ev.retrieval_metrics(q, g, ql + 10, gl)
    with pytest.raises(ValueError, match='outside the gallery'):
        ev.retrieval_metrics(q, g, query_gt=[[1], [2], [3], [4], [25]])
    with pytest.raises(ValueError, match='exclude_self needs the queries'):
        ev.retrieval_metrics(q, g, ql, gl, exclude_self=True)
    with pytest.raises(KeyError, match='FaissRetrievalTestLoop'):
        METRICS.build(dict(type='FaissRetrievalMetric')).process(
            None, [{'gt_label': torch.tensor([1]), 'sample_idx': 0}])


def test_fallbacks_warn_and_keep_numbers():
    rng = np.random.default_rng(12)
    g, gl = rng.standard_normal((300, 16)).astype(np.float32), rng.integers(0, 5, 300)
    q, ql = rng.standard_normal((40, 16)).astype(np.float32), rng.integers(0, 5, 40)
    exact = ev.retrieval_metrics(q, g, ql, gl)
    if not ev.search.faiss_has_gpu():  # faiss-gpu asked for without a GPU
        with pytest.warns(UserWarning, match="device='gpu' but faiss has no usable GPU"):
            on_gpu = ev.retrieval_metrics(q, g, ql, gl, device='gpu')
        assert on_gpu == exact
    with pytest.warns(UserWarning, match='approximate'):
        ivf = ev.retrieval_metrics(q, g, ql, gl, index='IVF4,Flat')
    assert set(ivf) == set(exact)
    with pytest.warns(UserWarning, match='float16 storage'):
        half = ev.retrieval_metrics(q, g, ql, gl, float16=True)
    assert abs(half['Recall@10'] - exact['Recall@10']) <= 5
    z = q.copy()
    z[3] = 0
    with pytest.warns(UserWarning, match='all-zero embeddings'):
        ev.retrieval_metrics(z, g, ql, gl)
    with pytest.warns(UserWarning, match='no relevant gallery item'):
        ev.retrieval_metrics(q, g, np.where(np.arange(40) == 0, 99, ql), gl)


def test_saved_gallery_streams_from_memmap(tmp_path):
    rng = np.random.default_rng(13)
    g, gl = rng.standard_normal((500, 8)).astype(np.float32), rng.integers(0, 7, 500)
    q, ql = rng.standard_normal((30, 8)).astype(np.float32), rng.integers(0, 7, 30)
    np.save(tmp_path / 'g.npy', g)
    np.save(tmp_path / 'gl.npy', gl)
    in_memory = ev.retrieval_metrics(q, g, ql, gl, metric_names=ALL)
    streamed = ev.retrieval_metrics(q, str(tmp_path / 'g.npy'), ql, gl,
                                    metric_names=ALL, shard_rows=64)
    assert_close(streamed, in_memory, tol=1e-12)
    metric = METRICS.build(dict(
        type='FaissRetrievalMetric', metric_names=ALL, shard_rows=100,
        gallery=dict(feats=str(tmp_path / 'g.npy'), labels=str(tmp_path / 'gl.npy'))))
    metric.process(None, samples_for(range(30), q, ql))
    got = metric.evaluate(30)
    assert_close({k.split('/', 1)[1]: v for k, v in got.items()}, in_memory, tol=1e-12)

"""Faiss retrieval evaluation: numbers against independent references.

References: a brute-force numpy implementation written here (full score
matrix in float64, stable sort = the documented tie rule) and MMPretrain's
own ``RetrievalRecall`` / ``RetrievalAveragePrecision`` where definitions
coincide. Data with ties use small integer (or exactly unit-norm) vectors so
every score is exact in float32 and float64 alike.
"""
import json
import os
import os.path as osp
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.dataset import DefaultSampler
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import enn_mm  # noqa: F401
import enn_mm.evaluation as ev
from enn_mm.evaluation.functional import Relevance, evaluate_rankings
from enn_mm.evaluation.gather import merge_parts
from enn_mm.evaluation.search import FaissSearcher, topk_of_scores
from mmpretrain.evaluation import RetrievalAveragePrecision, RetrievalRecall
from mmpretrain.registry import DATASETS, METRICS, MODELS
from mmpretrain.structures import DataSample

from conftest import REPO

ALL = ('Recall', 'Precision', 'mAP', 'AP', 'mAP@R')
# MMPretrain's own retrieval metrics (the reference) use APIs numpy deprecates
pytestmark = [pytest.mark.filterwarnings('ignore:.*in1d.*:DeprecationWarning'),
              pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')]
init_default_scope('mmpretrain')


# ------------------------------------------------------------- references
def ref_scores(q, g, similarity):
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    if similarity == 'cosine':
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    if similarity == 'l2':
        return -((q[:, None, :] - g[None]) ** 2).sum(-1)
    return q @ g.T


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


# ------------------------------------------------------------ search + maths
@pytest.mark.parametrize('similarity', ['ip', 'l2', 'cosine'])
@pytest.mark.parametrize('shard_rows', [None, 37])
def test_search_tie_rule_matches_bruteforce(similarity, shard_rows):
    rng = np.random.default_rng(0)
    make = unit_tie_data if similarity == 'cosine' else tie_data
    g, q = make(rng, 300), make(rng, 50)
    searcher = FaissSearcher(g, similarity, shard_rows=shard_rows)
    S = ref_scores(q, g, similarity)
    for k in (1, 7, 64, 300):
        scores, ids = searcher.search(q, k)
        ref = np.stack([ref_ranking(row)[:k] for row in S])
        np.testing.assert_array_equal(ids, ref)
        np.testing.assert_allclose(scores, np.take_along_axis(S, ref, 1), atol=1e-5)
    # the ties are real: many rows tie across the k-th place
    assert (np.sort(S, 1)[:, -7] == np.sort(S, 1)[:, -8]).mean() > 0.3


def test_topk_of_scores_tie_rule():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, size=(20, 50)).astype(np.float32)
    for k in (1, 5, 50):
        ref = np.stack([ref_ranking(row)[:k] for row in s])
        np.testing.assert_array_equal(topk_of_scores(s, k), ref)


@pytest.mark.parametrize('exclude_self', [False, True])
def test_label_metrics_match_bruteforce_with_ties(exclude_self):
    rng = np.random.default_rng(2)
    g, gl = tie_data(rng, 240), rng.integers(0, 6, 240)
    q, ql = tie_data(rng, 45), rng.integers(0, 7, 45)  # label 6: no relevant item
    topk = (1, 3, 10, 100)  # 100 > #relevant (~40) for every query
    if exclude_self:
        q, ql = g, gl
    with warnings.catch_warnings(record=True):
        warnings.simplefilter('always')
        ours = ev.retrieval_metrics(
            torch.from_numpy(q), None if exclude_self else g, torch.from_numpy(ql),
            None if exclude_self else gl, topk=topk, exclude_self=exclude_self,
            metric_names=ALL, similarity='ip', shard_rows=50)
    ref = ref_metrics(ref_scores(q, g, 'ip'), label_sets(ql, gl), topk, exclude_self)
    assert_close(ours, ref)
    assert set(ours) == set(ref)


def test_relevant_index_lists_match_bruteforce():
    """InShop-style ground truth: per-query lists of relevant gallery indices
    (with repeats, which count once), self-exclusion included."""
    rng = np.random.default_rng(3)
    g = tie_data(rng, 150)
    gt = [np.concatenate([rng.choice(150, rng.integers(1, 12), replace=False),
                          [i % 150]]) for i in range(150)]
    gt[4] = np.array([7, 7, 9])  # repeats
    topk = (1, 5, 20)
    for exclude_self, q in ((False, tie_data(rng, 150)), (True, g)):
        ours = ev.retrieval_metrics(q, g, query_gt=gt, topk=topk, metric_names=ALL,
                                    exclude_self=exclude_self, similarity='ip')
        ref = ref_metrics(ref_scores(q, g, 'ip'), [np.unique(x) for x in gt], topk,
                          exclude_self)
        assert_close(ours, ref)


def test_equals_mmpretrain_metrics():
    """Same numbers as RetrievalRecall / RetrievalAveragePrecision: on
    continuous scores through their own top-k, and on tied scores given the
    ranking (their top-k order on ties is unspecified)."""
    rng = np.random.default_rng(4)
    nq = 128  # Recall in percent is exact in their float32 then
    g, gl = rng.standard_normal((400, 16)).astype(np.float32), rng.integers(0, 8, 400)
    q, ql = rng.standard_normal((nq, 16)).astype(np.float32), rng.integers(0, 8, nq)
    ours = ev.retrieval_metrics(q, g, ql, gl, topk=(1, 5, 10, 50))
    scores = torch.from_numpy(ref_scores(q, g, 'cosine'))
    target = torch.from_numpy(gl[None] == ql[:, None]).long()
    recall = RetrievalRecall.calculate(scores, target, topk=(1, 5, 10, 50))
    for k, r in zip((1, 5, 10, 50), recall):
        assert abs(ours[f'Recall@{k}'] - r.item()) <= 1e-6
        ap = RetrievalAveragePrecision.calculate(scores, target, topk=k)
        assert abs(ours[f'mAP@{k}'] - ap) <= 1e-6

    gt, ql2 = tie_data(rng, 300), rng.integers(0, 5, nq)
    qt, gl2 = tie_data(rng, nq), rng.integers(0, 5, 300)
    ours = ev.retrieval_metrics(qt, gt, ql2, gl2, topk=(1, 5, 30), similarity='ip')
    S = ref_scores(qt, gt, 'ip')
    preds = [torch.from_numpy(ref_ranking(row)) for row in S]
    targets = [torch.from_numpy(np.flatnonzero(gl2 == c)) for c in ql2]
    for k in (1, 5, 30):
        r = RetrievalRecall.calculate(list(preds), list(targets), k, True, True)[0]
        ap = RetrievalAveragePrecision.calculate(list(preds), list(targets), k, True, True)
        assert abs(ours[f'Recall@{k}'] - r.item()) <= 1e-6
        assert abs(ours[f'mAP@{k}'] - ap) <= 1e-6


def test_equals_mmpretrain_retriever_path():
    """ImageToImageRetriever matching + the metrics' process/compute_metrics
    (MMPretrain's evaluation path) give our numbers per query."""
    from mmpretrain.models import ImageToImageRetriever
    rng = np.random.default_rng(5)
    g, gl = rng.standard_normal((300, 12)).astype(np.float32), rng.integers(0, 6, 300)
    q, ql = rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 6, 64)
    retriever = ImageToImageRetriever(torch.nn.Linear(1, 1), prototype=torch.from_numpy(g))
    retriever.prepare_prototype()
    recall, ap = RetrievalRecall(topk=(1, 5, 10)), RetrievalAveragePrecision(topk=10)
    for s in range(0, 64, 16):
        samples = [DataSample().set_gt_label(np.flatnonzero(gl == c).tolist())
                   for c in ql[s:s + 16]]
        samples = retriever._get_predictions(
            retriever.matching(torch.from_numpy(q[s:s + 16])), samples)
        recall.process(None, [d.to_dict() for d in samples])
        ap.process(None, [d.to_dict() for d in samples])
    theirs = {**recall.compute_metrics(recall.results), **ap.compute_metrics(ap.results)}
    ours = ev.retrieval_metrics(q, g, ql, gl, topk=(1, 5, 10), return_per_query=True)
    for key in ('Recall@1', 'Recall@5', 'Recall@10', 'mAP@10'):
        assert abs(ours[key] - theirs[key]) <= 1e-6
    per_ap = 100 * ours['per_query']['mAP@10']
    np.testing.assert_allclose(per_ap, [float(a) for a in ap.results], atol=1e-9)


def test_recall_curve_and_chunking():
    rng = np.random.default_rng(6)
    g, gl = tie_data(rng, 200), rng.integers(0, 5, 200)
    q, ql = tie_data(rng, 30), rng.integers(0, 5, 30)
    rel = Relevance(30, 200, ql, gl)
    searcher = FaissSearcher(g, 'ip')
    whole = evaluate_rankings(searcher, q, rel, (1, 4), ALL, curve_k=20)
    chunked = evaluate_rankings(searcher, q, rel, (1, 4), ALL, query_chunk=7, curve_k=20)
    ref = ref_metrics(ref_scores(q, g, 'ip'), label_sets(ql, gl), range(1, 21))
    np.testing.assert_allclose(whole['recall_curve'],
                               [ref[f'Recall@{k}'] for k in range(1, 21)], atol=1e-9)
    for k in whole:
        np.testing.assert_allclose(whole[k], chunked[k], atol=1e-12)


# --------------------------------------------------------------- image-text
def ref_image_text(img, txt, owner, topk):
    S = ref_scores(img, txt, 'cosine')
    out = {}
    i2t = ref_metrics(S, [np.flatnonzero(owner == i) for i in range(len(img))], topk)
    t2i = ref_metrics(S.T, [[o] for o in owner], topk)
    out.update({f'i2t/Recall@{k}': i2t[f'Recall@{k}'] for k in topk})
    out.update({f't2i/Recall@{k}': t2i[f'Recall@{k}'] for k in topk})
    return out


def test_image_text_duplicate_captions_and_ties():
    rng = np.random.default_rng(7)
    img = unit_tie_data(rng, 32)
    owner = np.repeat(np.arange(32), 5)  # 5 captions per image
    txt = unit_tie_data(rng, 160)
    txt[1] = txt[0]           # the same caption twice for one image
    txt[7] = txt[12] = txt[3]  # and across images
    ours = ev.image_text_retrieval_metrics(img, txt, owner)
    assert_close(ours, ref_image_text(img, txt, owner, (1, 5, 10)))
    # MMPretrain's RetrievalRecall on the same (tie-ruled) rankings
    S = ref_scores(img, txt, 'cosine')
    preds = [torch.from_numpy(ref_ranking(r)) for r in S]
    targets = [torch.from_numpy(np.flatnonzero(owner == i)) for i in range(32)]
    for k in (1, 5, 10):
        r = RetrievalRecall.calculate(list(preds), list(targets), k, True, True)[0]
        assert abs(ours[f'i2t/Recall@{k}'] - r.item()) <= 1e-6


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


# ----------------------------------------- MMPretrain datasets, Runner, tool
def write_images(folder, names, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name in names:
        path = osp.join(folder, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)


def run_test(cfg_dict, work_dir):
    cfg = Config(dict(
        default_scope='mmpretrain', work_dir=str(work_dir), log_level='WARNING',
        env_cfg=dict(dist_cfg=dict(backend='gloo')), test_cfg=dict(type='FaissRetrievalTestLoop'),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=100)), **cfg_dict))
    runner = Runner.from_cfg(cfg)
    return runner, runner.test()


def test_inshop_through_runner(tmp_path):
    """MMPretrain's InShop format: queries' gt_label lists gallery indices."""
    items = {'id_a': ['q', 'g', 'g', 'train'], 'id_b': ['q', 'q', 'g'],
             'id_c': ['g', 'q', 'g', 'g'], 'id_d': ['train', 'g']}
    lines = []
    for item, statuses in items.items():
        for j, status in enumerate(statuses):
            status = {'q': 'query', 'g': 'gallery'}.get(status, status)
            lines.append(f'img/{item}/{j}.jpg {item} {status}')
    os.makedirs(tmp_path / 'Eval')
    (tmp_path / 'Eval/list_eval_partition.txt').write_text(
        f'{len(lines)}\nimage_name item_id evaluation_status\n' + '\n'.join(lines))
    write_images(str(tmp_path / 'Img'), [ln.split()[0] for ln in lines], 0)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
    loader = dict(batch_size=3, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False))
    model = dict(
        type='ImageToImageRetriever', prototype='unused.pth',
        data_preprocessor=dict(mean=[127.5] * 3, std=[60.0] * 3),
        image_encoder=[dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                            num_stages=1, strides=(1, ), dilations=(1, ), out_indices=(0, )),
                       dict(type='GlobalAveragePooling')])
    runner, metrics = run_test(dict(
        model=model,
        test_dataloader=dict(dataset=dict(type='InShop', data_root=str(tmp_path), split='query',
                                          pipeline=pipeline), **loader),
        test_evaluator=dict(type='FaissRetrievalMetric', topk=(1, 2), metric_names=ALL,
                            gallery=dict(dataset=dict(type='InShop', data_root=str(tmp_path),
                                                      split='gallery', pipeline=pipeline),
                                         **loader))), tmp_path / 'work')
    # reference: embed every split by hand, ground truth from the file itself
    net = runner.model

    def embed(split):
        ds = DATASETS.build(dict(type='InShop', data_root=str(tmp_path), split=split,
                                 pipeline=pipeline))
        batch = net.data_preprocessor(Runner.build_dataloader(
            dict(dataset=ds, batch_size=100, num_workers=0,
                 sampler=dict(type='DefaultSampler', shuffle=False))).__iter__().__next__())
        with torch.no_grad():
            return net.extract_feat(batch['inputs'])[-1].numpy()
    gallery_items = [ln.split()[1] for ln in lines if ln.endswith('gallery')]
    query_items = [ln.split()[1] for ln in lines if ln.endswith('query')]
    gt = [[j for j, it in enumerate(gallery_items) if it == qi] for qi in query_items]
    ref = ref_metrics(ref_scores(embed('query'), embed('gallery'), 'cosine'), gt, (1, 2))
    assert_close({k.split('/', 1)[1]: v for k, v in metrics.items()}, ref, tol=1e-4)
    assert len(gt) == 4 and sorted(map(len, gt)) == [1, 1, 2, 3]


@MODELS.register_module(name='FaissToyDualEncoder', force=True)
class ToyDualEncoder(torch.nn.Module):
    """Images: mean colour; captions: letter counts (equal captions tie)."""

    def __init__(self):
        super().__init__()
        from mmpretrain.models.utils import MultiModalDataPreprocessor
        self.data_preprocessor = MultiModalDataPreprocessor()
        self.proj = torch.nn.Linear(3, 6, bias=False)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def text_feat(self, texts):
        return torch.tensor([[t.count(c) + 0.5 for c in 'aeiost'] for t in texts])

    def extract_feat(self, images, data_samples):
        texts = [t for s in data_samples for t in s.text]
        return dict(image_feat=self.proj(images.mean((2, 3))), text_feat=self.text_feat(texts))

    def _run_forward(self, data, mode):
        return self.extract_feat(**data)


CAPTIONS = [['a cat sits', 'a cat', 'cats sit'], ['a dog', 'a cat', 'dogs eat toast'],
            ['toast', 'a dog', 'sea side', 'a cat'], ['no caption twice']]


def image_text_reference(runner, dataset_cfg, n_img):
    ds = DATASETS.build(dataset_cfg)
    batch = runner.model.data_preprocessor(next(iter(Runner.build_dataloader(
        dict(IT_LOADER, dataset=ds, batch_size=100)))))
    with torch.no_grad():
        img = runner.model.proj(batch['images'].mean((2, 3))).numpy()
    texts = [t for caps in CAPTIONS[:n_img] for t in caps]
    owner = np.repeat(np.arange(n_img), [len(c) for c in CAPTIONS[:n_img]])
    txt = runner.model.text_feat(texts).numpy()
    return ref_image_text(img, txt, owner, (1, 2, 3))


IT_PIPELINE = [dict(type='LoadImageFromFile'),
               dict(type='PackInputs', algorithm_keys=['text', 'gt_text_id', 'gt_image_id'],
                    meta_keys=['image_id'])]
IT_LOADER = dict(batch_size=3, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                 collate_fn=dict(type='default_collate'))
IT_METRIC = dict(type='FaissImageTextRetrievalMetric', topk=(1, 2, 3))


def test_coco_retrieval_karpathy_format(tmp_path):
    images = [dict(id=100 + i, coco_url=f'http://x/val2014/COCO_{i}.jpg') for i in range(4)]
    annotations = [dict(image_id=100 + i, id=1000 + 10 * i + j, caption=c)
                   for i, caps in enumerate(CAPTIONS) for j, c in enumerate(caps)]
    (tmp_path / 'ann.json').write_text(json.dumps(dict(images=images, annotations=annotations)))
    write_images(str(tmp_path), [f'val2014/COCO_{i}.jpg' for i in range(4)], 1)
    dataset = dict(type='COCORetrieval', data_root=str(tmp_path), ann_file='ann.json',
                   pipeline=IT_PIPELINE, test_mode=True)
    runner, metrics = run_test(dict(model=dict(type='FaissToyDualEncoder'),
                                    test_dataloader=dict(dataset=dataset, **IT_LOADER),
                                    test_evaluator=IT_METRIC), tmp_path / 'work')
    ref = image_text_reference(runner, dataset, 4)
    assert_close({k.split('/', 1)[1]: v for k, v in metrics.items()}, ref, tol=1e-9)
    assert sorted(metrics) == sorted(f'retrieval/{k}' for k in ref)


def test_flickr30k_retrieval_karpathy_format(tmp_path):
    split = ['test', 'train', 'test', 'test', 'val']
    images, sent = [], 0
    for i, s in enumerate(split):
        caps = CAPTIONS[i % 4]
        ids = list(range(sent, sent + len(caps)))
        images.append(dict(filename=f'{i}.jpg', imgid=i, split=s, sentids=ids,
                           sentences=[dict(raw=c, imgid=i, sentid=j) for j, c in zip(ids, caps)]))
        sent += len(caps)
    (tmp_path / 'dataset_flickr30k.json').write_text(json.dumps(dict(images=images)))
    write_images(str(tmp_path / 'images'), [f'{i}.jpg' for i in range(5)], 2)
    dataset = dict(type='Flickr30kRetrieval', data_root=str(tmp_path), data_prefix='images',
                   ann_file='dataset_flickr30k.json', split='test', test_mode=True,
                   pipeline=IT_PIPELINE)
    runner, metrics = run_test(dict(model=dict(type='FaissToyDualEncoder'),
                                    test_dataloader=dict(dataset=dataset, **IT_LOADER),
                                    test_evaluator=IT_METRIC), tmp_path / 'work')
    # the test split holds images 0, 2 and 3, with captions of CAPTIONS[0, 2, 3]
    ds = DATASETS.build(dataset)
    assert ds.img_size == 3 and ds.text_size == 3 + 4 + 1
    batch = runner.model.data_preprocessor(next(iter(Runner.build_dataloader(
        dict(IT_LOADER, dataset=ds, batch_size=100)))))
    img = runner.model.proj(batch['images'].mean((2, 3))).detach().numpy()
    caps = CAPTIONS[0] + CAPTIONS[2] + CAPTIONS[3]
    owner = np.repeat(np.arange(3), [3, 4, 1])
    ref = ref_image_text(img, runner.model.text_feat(caps).numpy(), owner, (1, 2, 3))
    assert_close({k.split('/', 1)[1]: v for k, v in metrics.items()}, ref, tol=1e-9)


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


def test_fmnist_config_train_validate_test(fmnist_root, tmp_path):
    """ENN retrieval config: training validates with FaissRetrievalValLoop
    (save_best on mAP@R), testing equals the reference on extract_feat."""
    cfg = fmnist_cfg(osp.join(REPO, 'configs/retrieval/enn_resnet18w16_fmnist_retrieval.py'),
                     fmnist_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert any(f.startswith('best_retrieval_mAP@R') for f in os.listdir(tmp_path))
    metrics = runner.test()
    loader = Runner.build_dataloader(dict(cfg.test_dataloader, batch_size=100))
    batch = runner.model.data_preprocessor(next(iter(loader)), False)
    with torch.no_grad():
        feats = runner.model.extract_feat(batch['inputs'])[-1].numpy()
    labels = np.array([int(s.gt_label) for s in batch['data_samples']])
    ref = ref_metrics(ref_scores(feats, feats, 'cosine'), label_sets(labels, labels), (1, 5),
                      exclude_self=True)
    assert_close({k.split('/', 1)[1]: v for k, v in metrics.items()}, ref, tol=1e-4)


def test_unseen_classes_config(fmnist_root, tmp_path):
    cfg = fmnist_cfg(osp.join(REPO, 'configs/retrieval/resnet18w16_fmnist_unseen.py'),
                     fmnist_root, tmp_path)
    train = DATASETS.build(cfg.train_dataloader.dataset)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert set(train.get_gt_labels()) == {0, 1, 2, 3, 4}
    assert set(test.get_gt_labels()) == {5, 6, 7, 8, 9} and len(test) == 20
    assert test.get_data_info(3)['sample_idx'] == 3
    assert cfg.model.head.num_classes == 5
    metrics = Runner.from_cfg(cfg).test()
    assert 0 <= metrics['retrieval/mAP@R'] <= 100 and 'retrieval/AP@5' in metrics


def test_retrieval_eval_tool(fmnist_root, tmp_path, monkeypatch, capsys):
    from mmengine.runner import save_checkpoint
    cfg_path = osp.join(REPO, 'configs/retrieval/resnet18w16_fmnist_retrieval.py')
    model = MODELS.build(Config.fromfile(cfg_path).model)
    save_checkpoint(model.state_dict(), str(tmp_path / 'model.pth'))
    monkeypatch.syspath_prepend(osp.join(REPO, 'tools'))
    import retrieval_eval
    monkeypatch.setattr(sys, 'argv', [
        'retrieval_eval.py', cfg_path, str(tmp_path / 'model.pth'), '--work-dir',
        str(tmp_path / 'out'), '--save-feats', '--save-index', '--curve-k', '30',
        '--device', 'cpu', '--cfg-options', f'test_dataloader.dataset.data_root={fmnist_root}',
        'test_evaluator.topk=(1,5,10)',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False'])
    retrieval_eval.main()
    out = tmp_path / 'out'
    assert {'metrics.json', 'recall_curve.png', 'recall_curve.json', 'query_feats.npy',
            'query_labels.npy', 'gallery.index'} <= set(os.listdir(out))
    summary = json.loads((out / 'metrics.json').read_text())
    feats, labels = np.load(out / 'query_feats.npy'), np.load(out / 'query_labels.npy')
    assert feats.shape == (40, 64) and summary['exact']
    assert summary['embed_seconds'] > 0 and summary['search_seconds'] > 0  # where time goes
    ref = ref_metrics(ref_scores(feats, feats, 'cosine'), label_sets(labels, labels),
                      (1, 5, 10, 30), exclude_self=True)
    assert_close(summary['metrics'], {k: ref[k] for k in summary['metrics']}, tol=1e-4)
    curve = json.loads((out / 'recall_curve.json').read_text())
    assert abs(curve['Recall@30'] - ref['Recall@30']) <= 1e-4
    import faiss
    assert faiss.read_index(str(out / 'gallery.index')).ntotal == 40
    assert 'Recall' in capsys.readouterr().out


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

"""enn_mm.evaluation.search: faiss search follows the tie rule of a brute-force
ranking (helpers.py).
"""
import numpy as np
import pytest
from mmengine.registry import init_default_scope

import enn_mm  # noqa: F401
from enn_mm.evaluation.search import FaissSearcher, topk_of_scores

from helpers import RETRIEVAL_WARNINGS, ref_ranking, ref_scores, tie_data, unit_tie_data

pytestmark = RETRIEVAL_WARNINGS
init_default_scope('mmpretrain')


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


def near_tie_data(rng, n, dim=64, ulps=8):
    """Rows that differ from one base row by a few float32 ulps: their float32
    scores against a query near the base tie or flip with the BLAS kernel,
    their float64 scores do not."""
    base = rng.standard_normal(dim).astype(np.float32)
    steps = rng.integers(-ulps, ulps + 1, size=(n, dim)).astype(np.float32)
    rows = base + steps * np.spacing(np.abs(base))
    assert len(np.unique(rows, axis=0)) == n
    return rows.astype(np.float32), base


@pytest.mark.parametrize('similarity', ['ip', 'l2', 'cosine'])
@pytest.mark.parametrize('shard_rows', [None, 23])
def test_near_ties_follow_the_float64_rank_rule(similarity, shard_rows):
    rng = np.random.default_rng(3)
    g, base = near_tie_data(rng, 200)
    q = (base + 1e-3 * rng.standard_normal((30, len(base)))).astype(np.float32)
    S = ref_scores(q, g, similarity)
    # float32 cannot tell these apart: many neighbours within float32's resolution
    scale = 1.0 if similarity == 'cosine' else float(base @ base)  # of float32's terms
    gaps = np.diff(np.sort(S, 1)[:, ::-1][:, :20], axis=1)
    assert (np.abs(gaps) < 1e-6 * scale).mean() > 0.5
    searcher = FaissSearcher(g, similarity, shard_rows=shard_rows)
    for k in (1, 10, 57):
        scores, ids = searcher.search(q, k)
        ref = np.stack([ref_ranking(row)[:k] for row in S])
        np.testing.assert_array_equal(ids, ref)
        np.testing.assert_array_equal(scores, np.take_along_axis(S, ref, 1))


@pytest.mark.parametrize('similarity', ['ip', 'l2', 'cosine'])
def test_ranking_is_independent_of_float32_rounding(similarity, monkeypatch):
    """Another CPU's BLAS rounds faiss's float32 scores differently: jitter
    them within a float32 error of d·u and the ranking stays the same."""
    import faiss

    from enn_mm.evaluation import search as search_mod
    rng = np.random.default_rng(4)
    g, base = near_tie_data(rng, 300)
    g = np.concatenate([g, rng.standard_normal((300, 64)).astype(np.float32)])
    q = (base + 1e-3 * rng.standard_normal((25, 64))).astype(np.float32)
    want = FaissSearcher(g, similarity).search(q, 40)
    knn = faiss.knn
    scale = float(np.abs(ref_scores(q, g, similarity)).max())

    def jittered(xq, xb, k, metric=faiss.METRIC_L2):
        dist, ids = knn(xq, xb, min(2 * k, len(xb)), metric=metric)
        dist = dist + rng.uniform(-1, 1, dist.shape).astype(np.float32) * 64 * 2**-24 * scale
        order = np.argsort(-dist if metric == faiss.METRIC_INNER_PRODUCT else dist, axis=1)
        return (np.take_along_axis(dist, order, 1)[:, :k],
                np.take_along_axis(ids, order, 1)[:, :k])

    monkeypatch.setattr(search_mod.faiss, 'knn', jittered)
    for _ in range(3):
        got = FaissSearcher(g, similarity).search(q, 40)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])

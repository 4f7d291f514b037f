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

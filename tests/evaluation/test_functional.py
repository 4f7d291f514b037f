"""enn_mm.evaluation.functional: the metric maths against brute force
(helpers.py) and MMPretrain's own metrics and retriever path.
"""
import warnings

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.evaluation import RetrievalAveragePrecision, RetrievalRecall
from mmpretrain.structures import DataSample

import enn_mm  # noqa: F401
import enn_mm.evaluation as ev
from enn_mm.evaluation.functional import Relevance, evaluate_rankings
from enn_mm.evaluation.search import FaissSearcher

from helpers import (
    ALL,
    RETRIEVAL_WARNINGS,
    assert_close,
    label_sets,
    ref_image_text,
    ref_metrics,
    ref_ranking,
    ref_scores,
    tie_data,
    unit_tie_data,
)

pytestmark = RETRIEVAL_WARNINGS
init_default_scope('mmpretrain')


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

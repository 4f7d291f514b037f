"""The data sets retrieval evaluates on, through the Runner and
FaissRetrievalTestLoop: MMPretrain's InShop, COCO and Flickr30k (Karpathy)
formats.

References: brute force in helpers.py.
"""
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import DATASETS, MODELS

import enn_mm  # noqa: F401

from helpers import (
    ALL,
    IT_METRIC,
    RETRIEVAL_WARNINGS,
    assert_close,
    ref_image_text,
    ref_metrics,
    ref_scores,
)

pytestmark = RETRIEVAL_WARNINGS
init_default_scope('mmpretrain')


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

    def forward(self, images, data_samples, mode='tensor'):
        assert mode == 'tensor'  # what the retrieval loops ask of image-text models
        return self.extract_feat(images, data_samples)


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

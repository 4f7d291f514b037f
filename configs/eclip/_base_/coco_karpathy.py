# COCO image<->text retrieval, Karpathy splits: train 113k images (~567k
# captions, one sample per caption), val and test 5,000 images each (~25k
# captions, one sample per image with its ~5 captions). Both directions,
# Recall@1/5/10, exact faiss search.
#
# Data (MMPretrain's layout): data/coco/{train2014,val2014} and
# data/coco/annotations/caption_karpathy_{train,val,test}2014.json, linked in
# mmpretrain's configs/_base_/datasets/coco_retrieval.py.
dataset_type = 'COCORetrieval'
data_root = 'data/coco'
img_size = 224
data_preprocessor = dict(
    type='MultiModalDataPreprocessor',
    mean=[122.770938, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.5, 1.0),
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='CleanCaption', keys='text'),
    # image_id: two captions of one image are both positives (positive_key)
    dict(type='PackInputs', algorithm_keys=['text', 'is_matched'],
         meta_keys=['image_id']),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(img_size, img_size), interpolation='bicubic',
         backend='pillow'),
    dict(type='CleanCaption', keys='text'),
    dict(type='PackInputs', algorithm_keys=['text', 'gt_text_id', 'gt_image_id'],
         meta_keys=['image_id']),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    drop_last=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/caption_karpathy_train2014.json',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root,
                 ann_file='annotations/caption_karpathy_val2014.json',
                 pipeline=test_pipeline, test_mode=True),
    # split over ranks; the metric drops the sampler's padding repeats
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = dict(
    val_dataloader,
    dataset=dict(val_dataloader['dataset'],
                 ann_file='annotations/caption_karpathy_test2014.json'))

val_evaluator = dict(type='FaissImageTextRetrievalMetric', topk=(1, 5, 10), index='Flat')
test_evaluator = val_evaluator
val_cfg = dict(type='FaissRetrievalValLoop')
test_cfg = dict(type='FaissRetrievalTestLoop')

# Tiny-ImageNet (64 px, 200 classes) data, model and runtime shared by
# configs/paper/tiny_imagenet.
#
# - Model: ResNet_CIFAR (3x3 stride-1 stem, no max-pool), as the authors' scripts
#   use for every data set; depth set by each config.
# - Data: MMPretrain's CustomDataset over the tiny-imagenet-200 folder as it is
#   unpacked (data/tiny-imagenet-200):
#     train/<wnid>/images/*.JPEG   read by folder: class index = position of the
#                                  wnid in the sorted folder names
#     val/images/*.JPEG            read through meta/val.txt, `images/<file> <label>`
#                                  lines in the same class order, written from
#                                  val/val_annotations.txt and wnids.txt by
#                                  `python tools/prepare_tiny_imagenet.py data/tiny-imagenet-200`
#   RandomCrop(64, padding 4) + horizontal flip (the authors' CIFAR augmentation
#   at 64 px); ImageNet mean/std.
# - Evaluation: the 10,000 val images after every epoch; final-epoch top-1
#   reported, the best epoch's checkpoint kept beside it (the authors reported
#   the best).
_base_ = ['mmpretrain::_base_/default_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=200,
        in_channels=2048,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))

dataset_type = 'CustomDataset'
data_root = 'data/tiny-imagenet-200'
data_preprocessor = dict(
    num_classes=200,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=64, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]

# batch_size is per process: with N processes set it to the recipe's batch / N.
train_dataloader = dict(
    batch_size=64,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val',
                 ann_file='meta/val.txt', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1,
                    save_last=True, save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0)

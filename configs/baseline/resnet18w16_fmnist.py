# Dense baseline on Fashion-MNIST: the shared model, data, schedule and
# runtime as they are. configs/enn and configs/enn_local add only their lines.
_base_ = [
    '../_base_/models/resnet18w16_cifar.py', '../_base_/datasets/fmnist.py',
    '../_base_/schedules/adamw_6e.py', '../_base_/default_runtime.py'
]

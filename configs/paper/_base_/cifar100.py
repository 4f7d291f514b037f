# CIFAR-100 data, model and runtime shared by configs/paper/cifar100: as
# ./cifar10.py (ResNet_CIFAR stem, RandomCrop(32, padding 4) + flip, test split
# after every epoch, final-epoch top-1 reported, best epoch kept beside it)
# with MMPretrain's CIFAR100 dataset (python pickles of cifar-100-python.tar.gz
# under data/cifar100/cifar-100-python) and 100 classes.
_base_ = [
    'mmpretrain::_base_/models/resnet50_cifar.py',
    'mmpretrain::_base_/datasets/cifar100_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]

model = dict(head=dict(num_classes=100))

# batch_size is per process (see ./cifar10.py)
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True)
val_dataloader = dict(batch_size=500, num_workers=4, persistent_workers=True)
test_dataloader = val_dataloader

val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=1,
                    save_last=True, save_best='accuracy/top1', rule='greater'))
randomness = dict(seed=0)

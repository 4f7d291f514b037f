# CIFAR-10 data, model and runtime shared by configs/paper/cifar10 (dense, ENN
# and ENN-ℓ configs add only their recipe and their ENN lines).
#
# - Model: MMPretrain's ResNet_CIFAR (3x3 stride-1 stem, no max-pool: the stem
#   of the authors' scripts), depth set by each config.
# - Data: MMPretrain's CIFAR10 dataset, i.e. the python pickle batches of
#   cifar-10-python.tar.gz unpacked under data/cifar10/cifar-10-batches-py
#   (MMPretrain downloads them there on first use and checks their md5);
#   RandomCrop(32, padding 4) + horizontal flip, as the authors.
# - Evaluation: the test split after every epoch. The last epoch's top-1 is
#   the reported number; the best epoch's checkpoint is kept beside it
#   (best_accuracy_top1_epoch_N.pth), labelled as such: the authors reported
#   the best test accuracy over all epochs.
_base_ = [
    'mmpretrain::_base_/models/resnet50_cifar.py',
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
]

# batch_size is per process: the recipes' batch is the total batch of one
# process; with N processes set train_dataloader.batch_size to batch / N.
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

# Dense baseline, ImageNet ResNet-152.
# Reproduces: the paper's Table 4, "BP" row, IN R152 (paper: 21.40 % top-1 error).
# Recipe: as ./resnet101_dense.py (the authors' ENN-with-BP recipe, row
# "ImageNet ResNet-101 / 152": AdamW lr 1e-3 wd 0.01 on every parameter, cosine T_max
# 500 per iteration, 1000 epochs nominal, Resize 256 -> CenterCrop 224 -> flip) with
# depth 152 and batch 200. The model is MMPretrain's resnet152_8xb32_in1k one.
# Deviations: MMPretrain's ImageNet stem instead of the authors' CIFAR stem at 224 px
# (see ./resnet101_dense.py); final-epoch val accuracy reported (best epoch kept beside
# it).
_base_ = ['./resnet101_dense.py']

model = dict(backbone=dict(depth=152))
train_dataloader = dict(batch_size=200)
auto_scale_lr = dict(base_batch_size=200)

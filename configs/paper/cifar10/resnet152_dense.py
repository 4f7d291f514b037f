# Dense baseline, CIFAR-10 ResNet-152.
# Reproduces: the paper's Table 4, "BP" row, C10 R152 (paper: 6.35 % test error).
# Recipe: the authors' ENN-with-BP recipe for this setting (the authors' scripts, ENN-with-BP table,
# row "CIFAR-10/100 ResNet-101/152") with the dense network: batch 400, AdamW lr 1e-4,
# weight decay 0.01 on every parameter, cosine stepped per iteration with T_max 200
# (past T_max the lr follows the cosine back up, period 400 iterations, as torch's
# CosineAnnealingLR does), 1000 epochs.
# Deviation: the final epoch's test accuracy is the reported number; the best epoch's
# checkpoint is kept beside it, labelled (the authors reported the best epoch).
_base_ = ['../_base_/cifar10.py']

model = dict(backbone=dict(depth=152))

train_dataloader = dict(batch_size=400)

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.01))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=200, eta_min=0.0, by_epoch=False, begin=0),
]
train_cfg = dict(by_epoch=True, max_epochs=1000, val_interval=1)
auto_scale_lr = dict(base_batch_size=400)

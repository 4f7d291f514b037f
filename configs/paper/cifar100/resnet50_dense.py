# Dense baseline, CIFAR-100 ResNet-50.
# Reproduces: the paper's Table 4, "BP" row, C100 R50 (paper: 32.94 % test error).
# Recipe: the authors' ENN-with-BP recipe for this setting (the authors' scripts, ENN-with-BP table,
# row "CIFAR-100 ResNet-50") with the dense network: batch 512, AdamW lr 1e-3, weight
# decay 0.01 on every parameter, cosine stepped per epoch with T_max 200 (past T_max the
# lr follows the cosine back up, as torch's CosineAnnealingLR does), 500 epochs.
# Deviation: the final epoch's test accuracy is the reported number; the best epoch's
# checkpoint is kept beside it, labelled (the authors reported the best epoch).
_base_ = ['../_base_/cifar100.py']

model = dict(backbone=dict(depth=50))

train_dataloader = dict(batch_size=512)

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=200, eta_min=0.0, by_epoch=True, begin=0),
]
train_cfg = dict(by_epoch=True, max_epochs=500, val_interval=1)
auto_scale_lr = dict(base_batch_size=512)

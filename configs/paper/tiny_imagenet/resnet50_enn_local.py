# ENN-ℓ, Tiny-ImageNet ResNet-50.
# Reproduces: the paper's Table 4, "ENN-ℓ" row, Tiny R50 (paper: 33.75 % test error).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "Tiny-ImageNet ResNet-50
# / 101 / 152", its ResNet-50 entries):
# - blocks: the stem, each of the 16 bottleneck blocks, the pooled FC (K = 18); no
#   gradient crosses a block boundary; one optimizer per block, SGD with Nesterov
#   momentum 0.9 and weight decay 5e-4;
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 1,494M fixed weights in all (5.6 GiB in fp32), the largest 209.7M;
#   local_head=dict(type='ENNPoolLinearLocalHead') is the light alternative (not the
#   authors' head);
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 5e-5;
# - lr 1e-4 for every block, cosine stepped per iteration with T_max 200 (past T_max it
#   follows the cosine back up, period 400 iterations), batch 64, 500 epochs.
# Deviations: no weight decay on Q and P; final-epoch accuracy on the val images
# reported (best epoch kept beside it). ENN-ℓ trains in one process (no DDP).
_base_ = ['./resnet50_dense.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model=dict(type='ENNModel', model={{_base_.model}},
               enn=dict(ortho='penalty', gamma=5e-5)),
    cuts='resnet_block',
    input_shape=(3, 64, 64),
    # the largest frozen head (209.7 M fixed weights) is over the default
    # budget of 2**23
    max_head_params=2**28,
    local_head=dict(type='ENNFrozenLinearLocalHead'))

train_dataloader = dict(batch_size=64)

optim_wrapper = dict(
    _delete_=True,
    constructor='ENNLocalOptimWrapperConstructor',
    block_constructor='ENNOptimWrapperConstructor',
    optimizer=dict(type='SGD', lr=1e-4, momentum=0.9, nesterov=True, weight_decay=5e-4))
# one copy of this schedule per block's optimizer
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=200, eta_min=0.0, by_epoch=False, begin=0),
]

train_cfg = dict(by_epoch=True, max_epochs=500, val_interval=1)
auto_scale_lr = dict(base_batch_size=64)
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=500)]

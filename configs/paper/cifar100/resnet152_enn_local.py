# ENN-ℓ, CIFAR-100 ResNet-152.
# Reproduces: the paper's Table 4, "ENN-ℓ" row, C100 R152 (paper: 26.11 % test error).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "CIFAR-100
# ResNet-50/152").
# - blocks: the stem, each of the 50 bottleneck blocks, the pooled FC (K = 52); no
#   gradient crosses a block boundary; one AdamW per block;
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 436M fixed weights in all (1.6 GiB in fp32), the largest 26.2M;
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 1e-6;
# - lr: stem 1e-4, residual blocks 1e-4 (constant), FC 1e-3; the stem and the FC follow
#   a one-cycle schedule peaking at 5x their base lr (5e-4, 5e-3) with pct_start 0.35
#   over the 500 epochs, torch's other one-cycle defaults (start at peak / 25, cosine
#   annealing to start / 1e4);
# - AdamW weight decay 0.01 (torch's default; the table gives none), batch 512, 500
#   epochs.
# Deviations: no weight decay on Q and P; final-epoch test accuracy reported (best epoch
# kept beside it). ENN-ℓ trains in one process (no DDP).
# Everything but the depth and the per-block schedule list is resnet50_enn_local.py's.
_base_ = ['./resnet50_enn_local.py']

model = dict(model=dict(model=dict(backbone=dict(depth=152))))

num_blocks = 52  # stem + 50 bottleneck blocks + pooled FC
param_scheduler = {f'block{k}': [] for k in range(num_blocks)}  # constant lr
param_scheduler.update({
    '_delete_': True,
    'block0': {{_base_.param_scheduler.block0}},  # stem: one-cycle
    f'block{num_blocks - 1}': {{_base_.param_scheduler.block17}},  # FC: one-cycle
})

# ENN-ℓ, CIFAR-10 ResNet-101.
# Reproduces: the paper's Table 4, "ENN-ℓ" row, C10 R101 (paper: 3.89 % test error).
# Recipe: the authors' ENN-ℓ recipe (the authors' scripts, ENN-ℓ table, row "CIFAR-10
# ResNet-50/101").
# - blocks: the stem, each of the 33 bottleneck blocks, the pooled FC (K = 35); no
#   gradient crosses a block boundary; one AdamW per block;
# - local heads: a frozen random linear map of each block's flattened output (the
#   authors' heads): 30M fixed weights in all (0.1 GiB in fp32), the largest 2.6M;
# - loss per block: CE + γ·ortho of the block's ENN layers, γ = 1e-6;
# - lr: stem 1e-4, residual blocks 5e-4 (constant), FC 1e-3; the stem and the FC follow
#   a one-cycle schedule peaking at 5x their base lr (5e-4, 5e-3) with pct_start 0.35
#   over the 500 epochs, torch's other one-cycle defaults (start at peak / 25, cosine
#   annealing to start / 1e4);
# - AdamW weight decay 0.01 (torch's default; the table gives none), batch 512, 500
#   epochs.
# Deviations: no weight decay on Q and P; final-epoch test accuracy reported (best epoch
# kept beside it). ENN-ℓ trains in one process (no DDP).
# Everything but the depth and the per-block schedule list is resnet50_enn_local.py's.
_base_ = ['./resnet50_enn_local.py']

model = dict(model=dict(model=dict(backbone=dict(depth=101))))

num_blocks = 35  # stem + 33 bottleneck blocks + pooled FC
param_scheduler = {f'block{k}': [] for k in range(num_blocks)}  # constant lr
param_scheduler.update({
    '_delete_': True,
    'block0': {{_base_.param_scheduler.block0}},  # stem: one-cycle
    f'block{num_blocks - 1}': {{_base_.param_scheduler.block17}},  # FC: one-cycle
})

# ENN-ℓ, ImageNet ResNet-152.
# Reproduces: the paper's Table 4, "ENN-ℓ" row, IN R152 (paper: 17.11 % top-1 error).
# Recipe: not known (the authors' ImageNet "ENN-ℓ" scripts train end to end).
# Our choice, as ./resnet101_enn_local.py:
# - blocks: the stem, each of the 50 bottleneck blocks, the pooled FC (K = 52); one
#   AdamW per block;
# - local heads: ENNPoolLinearLocalHead (47.9M parameters over the 51 heads); the
#   authors' frozen linear head on the flattened map is refused at 224 px (200M weights
#   for the stem's);
# - per block, the ENN-with-BP recipe of ./resnet152_enn.py: AdamW lr 1e-3 wd 0.01,
#   cosine T_max 500 per iteration, γ = 5e-5, batch 200, 1000 epochs nominal.
# Deviations: MMPretrain's ImageNet stem (see ./resnet101_dense.py); no weight decay on Q
# and P; final-epoch val accuracy reported (best epoch kept beside it). ENN-ℓ trains in
# one process (no DDP).
_base_ = ['./resnet101_enn_local.py']

# ResNet-101's ENN-ℓ config at depth 152 and the recipe's batch for it
model = dict(model=dict(model=dict(backbone=dict(depth=152))))
train_dataloader = dict(batch_size=200)
auto_scale_lr = dict(base_batch_size=200)

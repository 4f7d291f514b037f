# ENN-ℓ with the paper's split (stem, each of the 6 residual blocks, pooled FC:
# 8 blocks) and AugLocal-style local heads: block k's head is a fresh copy of
# up to two of the network's own later residual blocks (tapering to one near
# the output), then pooling and a linear layer. The best per-block recipe
# measured by tools/benchmarks/local_accuracy.py
# (docs/results/local_accuracy.json). Same data, epochs, optimizer and
# schedule as configs/enn and configs/baseline: only the ENN-ℓ lines differ.
_base_ = ['./resnet18w16_fmnist.py']

model = dict(local_head=dict(_delete_=True, type='ENNDownstreamLocalHead', depth=2))

# ENN-ℓ, one block per stage (stem + stage 1, stage 2, stage 3 + head: 3
# blocks), with AugLocal-style local heads: each block's head is a fresh copy
# of two of the network's own later residual blocks (the stride-2 ones first),
# then pooling and a linear layer. The best per-stage recipe measured by
# tools/benchmarks/local_accuracy.py (docs/results/local_accuracy.json).
# Same data, epochs, optimizer and schedule as configs/enn and
# configs/baseline: only the ENN-ℓ lines differ.
_base_ = ['./resnet18w16_fmnist.py']

model = dict(cuts='resnet_stage',
             local_head=dict(_delete_=True, type='ENNDownstreamLocalHead', depth=2))

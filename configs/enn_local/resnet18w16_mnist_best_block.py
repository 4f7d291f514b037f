# MNIST twin of resnet18w16_fmnist_best_block.py (same ENN-ℓ lines).
_base_ = ['./resnet18w16_mnist.py']

model = dict(local_head=dict(_delete_=True, type='ENNDownstreamLocalHead', depth=2))

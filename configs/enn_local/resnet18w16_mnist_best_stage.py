# MNIST twin of resnet18w16_fmnist_best_stage.py (same ENN-ℓ lines).
_base_ = ['./resnet18w16_mnist.py']

model = dict(cuts='resnet_stage',
             local_head=dict(_delete_=True, type='ENNDownstreamLocalHead', depth=2))

# ENN on MNIST with the paper's penalty (as resnet18w16_fmnist_penalty.py).
_base_ = ['./resnet18w16_mnist.py']

model = dict(enn=dict(_delete_=True, ortho='penalty', gamma=1e-5))

# ENN on MNIST with QR retraction after every optimizer step (as
# resnet18w16_fmnist_retract.py).
_base_ = ['./resnet18w16_mnist.py']

model = dict(enn=dict(_delete_=True, ortho='retract', retract_interval=1))

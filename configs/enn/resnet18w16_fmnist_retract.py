# ENN with Q and P kept exactly orthonormal by QR retraction after every
# optimizer step instead of the paper's penalty (gamma defaults to 0).
_base_ = ['./resnet18w16_fmnist.py']

model = dict(enn=dict(_delete_=True, ortho='retract'))

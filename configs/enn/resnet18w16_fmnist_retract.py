# ENN with QR retraction after every optimizer step (retract_interval=1; the
# default retracts every 10th step).
_base_ = ['./resnet18w16_fmnist.py']

model = dict(enn=dict(_delete_=True, ortho='retract', retract_interval=1))

# ENN with the paper's orthonormality penalty γ·Σ(‖QᵀQ−I‖²_F + ‖PᵀP−I‖²_F),
# γ = 1e-5 (the authors' released-code mode) instead of QR retraction.
_base_ = ['./resnet18w16_fmnist.py']

model = dict(enn=dict(_delete_=True, ortho='penalty', gamma=1e-5))

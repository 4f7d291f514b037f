# eclip_resnet18w16-minilm_union.py with the paper's orthogonality penalty
# (gamma 1e-5, every step) instead of retraction.
_base_ = ['./eclip_resnet18w16-minilm_union.py']

model = dict(enn=dict(ortho='penalty', gamma=1e-5))

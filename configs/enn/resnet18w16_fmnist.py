# ENN: the shared recipe with every Conv2d/Linear as W = Q·diag(λ)·Pᵀ, on the
# default orthonormality mode: Q and P kept exactly orthonormal by QR
# retraction after every 10th optimizer step (docs/results.md#orthonormality).
# The paper's penalty is resnet18w16_fmnist_penalty.py.
_base_ = ['../baseline/resnet18w16_fmnist.py']

custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='retract', retract_interval=10))  # the defaults, written out

# Same optimizer; the ENN constructor only keeps weight decay off Q and P.
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

# Orthogonality error and λ spectra in the log and as PNGs in work_dir.
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=100)]

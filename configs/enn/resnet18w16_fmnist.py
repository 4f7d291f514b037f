# ENN: the shared recipe with every Conv2d/Linear as W = Q·diag(λ)·Pᵀ.
_base_ = ['../_base_/fmnist_resnet18w16.py']

custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict(ortho='penalty', gamma=1e-5))

# Same optimizer; the ENN constructor only keeps weight decay off Q and P.
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

# Orthogonality error and λ spectra in the log and as PNGs in work_dir.
custom_hooks = [dict(type='ENNDiagnosticsHook', interval=100)]

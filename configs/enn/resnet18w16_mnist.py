# ENN on MNIST: the dense MNIST baseline with the ENN lines of
# resnet18w16_fmnist.py.
_base_ = ['../baseline/resnet18w16_mnist.py']

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

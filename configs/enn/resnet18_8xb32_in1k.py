# ENN version of MMPretrain's ImageNet ResNet-18 recipe: the two lines of the README.
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']
custom_imports = dict(imports=['enn_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNModel',
    model={{_base_.model}},
    enn=dict())  # defaults: QR retraction every 10th step; the paper's penalty:
                 # enn=dict(ortho='penalty', gamma=1e-5)
optim_wrapper = dict(constructor='ENNOptimWrapperConstructor')

# ENN-ℓ, fast and accurate: the end-to-end ENN recipe
# (configs/enn/resnet18w16_fmnist.py, QR retraction after every 10th step)
# cut into two blocks, one per worker of a 2-process pipeline: the stem and the
# first residual block (the 28-px convs: on a CPU they take as long as the
# rest of the network), then everything after. Block 0 learns through an
# AugLocal head: fresh full-width copies of the network's two later stride-2
# blocks (layer2.0, layer3.0), pooling, linear (enn_mm.local.local_flops
# counts its cost). Only the ENN-ℓ lines differ from the end-to-end recipe;
# each block keeps its own AdamW and schedule and retracts its own bases.
# The split and head were chosen on one seed among K = 2 and K = 3 splits and
# cheaper heads (docs/results/enn_l_screen.json). Retracting every 10th step
# reached the accuracy of retracting every step, 3 seeds each, at a shorter
# iteration (docs/results/ortho_modes_accuracy.json). Accuracy and speed of
# this config: docs/results/enn_l_headline.json.
_base_ = ['../enn/resnet18w16_fmnist.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model={{_base_.model}},
    cuts=['backbone.layer1.0'],
    input_shape=(1, 28, 28),
    local_head=dict(type='ENNDownstreamLocalHead', depth=2))

optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor',
                     block_constructor='ENNOptimWrapperConstructor')

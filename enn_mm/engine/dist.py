"""``--launcher pytorch`` on machines without CUDA (gloo on CPU), and running
MMPretrain's own tools with the plugin loaded.

mmengine 0.10's ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
unconditionally, so CPU-only distributed training (gloo) fails before it
starts. Where CUDA is unavailable we replace just that function with one that
skips the device call; with CUDA, mmengine's own is left untouched.

On CPU also set ``model_wrapper_cfg = dict(type='MMDistributedDataParallel',
device_ids=None)`` (the configs in ``configs/`` do): DDP takes no device ids
for CPU modules.
"""
import os
import runpy

import mmpretrain
import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils
from mmengine.logging import print_log


def _init_dist_pytorch_cpu(backend='gloo', init_backend='torch', **kwargs) -> None:
    if init_backend != 'torch':
        raise ValueError(f'init_backend={init_backend!r} needs CUDA; on CPU use the default.')
    if backend != 'gloo':
        print_log(f"dist backend {backend!r} needs CUDA; using 'gloo' on this CPU machine",
                  logger='current', level=30)
        backend = 'gloo'
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


if not torch.cuda.is_available():
    dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu


def run_mmpretrain_tool(name: str) -> None:
    """Run MMPretrain's own ``tools/<name>`` (the copy installed with it,
    under ``.mim``) as ``__main__`` in this process, then leave the process
    group cleanly: torn down at interpreter exit, gloo's threads can abort a
    rank that finished last ("terminate called ...").

    ``tools/train.py`` and ``tools/test.py`` are this with ``enn_mm`` loaded
    (registries, safe checkpoint loading, the CPU launch above).
    """
    runpy.run_path(os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', name),
                   run_name='__main__')
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()

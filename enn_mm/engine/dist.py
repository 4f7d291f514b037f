"""Running MMPretrain's own tools with the plugin loaded, ``--launcher
pytorch`` on machines without CUDA included.

mmengine 0.10's pytorch launcher calls ``torch.cuda.set_device``
unconditionally, so CPU-only distributed training (gloo) fails before it
starts. The Runner only initialises a process group when none exists, so
:func:`run_mmpretrain_tool` starts the gloo group itself first, with the
config's ``env_cfg.dist_cfg`` (its ``timeout``), where there is no CUDA;
with CUDA, mmengine's own launcher runs untouched. Nothing is patched.

On CPU also set ``model_wrapper_cfg = dict(type='MMDistributedDataParallel',
device_ids=None)`` (the configs in ``configs/`` do): DDP takes no device ids
for CPU modules.
"""
import datetime
import os
import runpy
from typing import Optional

import mmpretrain
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

__all__ = ['init_cpu_process_group', 'run_mmpretrain_tool']


def init_cpu_process_group(dist_cfg: Optional[dict] = None) -> bool:
    """Start the gloo process group of a ``--launcher pytorch`` run on a
    machine without CUDA, from torchrun's environment variables.

    Args:
        dist_cfg (dict, optional): The config's ``env_cfg.dist_cfg``:
            ``backend`` (anything but gloo needs CUDA: gloo is used, with a
            warning) and ``timeout`` in seconds.

    Returns:
        bool: Whether a group was started (False with CUDA, or when one
        exists already).
    """
    if torch.cuda.is_available() or (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    dist_cfg = dict(dist_cfg or {})
    backend = dist_cfg.pop('backend', 'gloo')
    if backend != 'gloo':
        print_log(f"dist backend {backend!r} needs CUDA; using 'gloo' on this CPU machine",
                  logger='current', level=30)
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    return True


def run_mmpretrain_tool(name: str) -> None:
    """Run MMPretrain's own ``tools/<name>`` (the copy installed with it,
    under ``.mim``) as ``__main__`` in this process.

    With ``--launcher pytorch`` and no CUDA, the gloo group is started first
    (:func:`init_cpu_process_group`, from the config the tool's own argument
    parser reads). Afterwards the process group is left cleanly: torn down at
    interpreter exit, gloo's threads can abort a rank that finished last
    ("terminate called ...").

    Args:
        name (str): ``'train.py'`` or ``'test.py'``.
    """
    path = os.path.join(os.path.dirname(mmpretrain.__file__), '.mim', 'tools', name)
    tool = runpy.run_path(path, run_name='enn_mm_tool')  # its functions; main() below
    if not torch.cuda.is_available():
        args = tool['parse_args']()
        if getattr(args, 'launcher', 'none') == 'pytorch':
            cfg = Config.fromfile(args.config)
            if args.cfg_options:
                cfg.merge_from_dict(args.cfg_options)
            init_cpu_process_group((cfg.get('env_cfg') or {}).get('dist_cfg'))
    tool['main']()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()

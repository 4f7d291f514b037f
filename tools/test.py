"""MMPretrain's tools/test.py with enn_mm loaded (same flags)."""
import os.path as osp
import runpy

import mmpretrain
import torch.distributed as dist

import enn_mm  # noqa: F401  (registries, safe mmengine checkpoint loading)

if __name__ == '__main__':
    runpy.run_path(osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'test.py'),
                   run_name='__main__')
    # Leave the process group cleanly: torn down at interpreter exit, gloo's
    # threads can abort a rank that finished last ("terminate called ...").
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

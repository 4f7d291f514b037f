"""MMPretrain's tools/train.py with enn_mm loaded (same flags)."""
import os.path as osp
import runpy

import mmpretrain

import enn_mm  # noqa: F401  (registries, safe mmengine checkpoint loading)

if __name__ == '__main__':
    runpy.run_path(osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', 'train.py'),
                   run_name='__main__')

"""MMPretrain's tools/test.py with enn_mm loaded (same flags)."""
import enn_mm  # noqa: F401  (registries, safe mmengine checkpoint loading)
from enn_mm.engine.dist import run_mmpretrain_tool

if __name__ == '__main__':
    run_mmpretrain_tool('test.py')

"""Suite-wide pytest hooks and fixtures. Helpers that test modules import
live in helpers.py (``from helpers import ...``)."""
import os

import pytest
import torch

from helpers import class_images, write_idx

# tools/run_tests.sh runs the suite on pytest-xdist workers, one per core:
# each worker's torch gets its share of the cores, not all of them.
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (tools/gpu_check.sh runs these)')
    config.addinivalue_line('markers', 'slow: starts benchmark scripts or whole README commands '
                            'in subprocesses (CI runs them; -m "not slow" skips them locally)')


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run first: the workers take the long ones while the
    short ones can still fill the gaps (the suite ends on short tests).

    With ENN_MM_REQUIRE_GPU=1 (tools/gpu_check.sh) a GPU test that would
    be skipped for want of CUDA or faiss-gpu is an error instead."""
    items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # stable
    if os.environ.get('ENN_MM_REQUIRE_GPU') != '1':
        return
    if not any(item.get_closest_marker('gpu') for item in items):
        return
    if not torch.cuda.is_available():
        raise pytest.UsageError('ENN_MM_REQUIRE_GPU=1 but torch sees no CUDA GPU '
                                f'(torch {torch.__version__}, built for CUDA '
                                f'{torch.version.cuda}).')
    import faiss
    if not (hasattr(faiss, 'StandardGpuResources') and faiss.get_num_gpus() > 0):
        raise pytest.UsageError('ENN_MM_REQUIRE_GPU=1 but faiss has no GPU support: install '
                                "the [gpu] extra (faiss-gpu) instead of faiss-cpu.")


@pytest.fixture(scope='session')
def fmnist_root(tmp_path_factory):
    """A tiny Fashion-MNIST folder in the real (un-gzipped IDX) format."""
    root = tmp_path_factory.mktemp('fashion_mnist')
    write_idx(str(root), 'train', *class_images(64, 0))
    write_idx(str(root), 't10k', *class_images(40, 1))
    return str(root)

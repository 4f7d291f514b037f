"""``ENNUnionCaptions``: Fashion-MNIST and MNIST digits as one 20-class
image<->text set, with held-out caption templates and unseen classes.

Class-level retrieval, as :mod:`.fmnist_captions`: a caption describes a
class ("a close-up photo of a sneaker.", "a scan of a handwritten seven."),
so it is relevant to every image of that class. The union makes the towers
tell clothing from digits from the text alone, and gives enough distinct
captions (20 classes x 20 held-out templates x 4 phrasings) that one query
moves recall by well under half a point, on the unseen classes as well.
"""
import os.path as osp
from typing import Dict, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.fileio import join_path
from mmpretrain.datasets.categories import FASHIONMNIST_CATEGORITES, MNIST_CATEGORITES
from mmpretrain.datasets.mnist import read_image_file, read_label_file
from mmpretrain.registry import DATASETS

from .class_captions import ClassCaptionLayout, caption_templates, draw

__all__ = ['ENNUnionCaptions', 'UNION_CLASSES', 'UNION_PHRASES', 'UNION_TRAIN_TEMPLATES',
           'UNION_TEST_TEMPLATES', 'UNION_UNSEEN']

# Class c < 10 is Fashion-MNIST's class c, class 10 + d is the digit d.
UNION_CLASSES = tuple(FASHIONMNIST_CATEGORITES) + tuple(MNIST_CATEGORITES)
# How the captions name each class: four phrasings per class, article
# included; every caption uses one of them, in training and at test.
_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')
UNION_PHRASES = (
    ('a t-shirt', 'a short-sleeved top', 'a tee', 'a casual top'),
    ('a pair of trousers', 'a pair of pants', 'some slacks', 'a pair of jeans'),
    ('a pullover', 'a sweater', 'a jumper', 'a knitted sweater'),
    ('a dress', 'a gown', 'a summer dress', 'a frock'),
    ('a coat', 'a jacket', 'an overcoat', 'a winter coat'),
    ('a sandal', 'an open-toed shoe', 'a flip-flop', 'a summer sandal'),
    ('a shirt', 'a button-up shirt', 'a blouse', 'a collared shirt'),
    ('a sneaker', 'a running shoe', 'a trainer', 'an athletic shoe'),
    ('a bag', 'a handbag', 'a purse', 'a tote bag'),
    ('an ankle boot', 'a short boot', 'a leather boot', 'a heeled boot'),
) + tuple((f'a handwritten {w}', f'the digit {w}', f'a handwritten {d}', f'the number {w}')
          for d, w in enumerate(_WORDS))
# Plain descriptions, one {} for the phrase. Training sees only the first
# list; every evaluation caption uses a wording of the second.
UNION_TRAIN_TEMPLATES = (
    'a photo of {}.', 'a picture of {}.', 'an image of {}.', 'a grayscale photo of {}.',
    'a low-resolution photo of {}.', 'a small photo of {}.', 'a blurry picture of {}.',
    'a centered image of {}.', 'a tiny grayscale image of {}.', 'a cropped photo of {}.',
    'a dark photo of {}.', 'a thumbnail of {}.', 'a pixelated image of {}.',
    'a close-up photo of {}.', 'a monochrome picture of {}.', 'a scan of {}.')
UNION_TEST_TEMPLATES = (
    'a black and white image showing {}.', 'a small picture of {}.', 'this is {}.',
    'there is {} in the picture.', 'an old photograph of {}.', 'a faded image of {}.',
    'a simple drawing-like image of {}.', 'a gray square picture with {}.',
    'a picture that shows {}.', 'here we see {}.', 'a snapshot of {}.',
    'a grainy photo of {}.', 'an illustration of {}.', 'a 28 by 28 pixel image of {}.',
    '{} on a black background.', 'a bright image of {}.', 'a single object: {}.',
    'a quick shot of {}.', 'the image contains {}.', 'a rough picture of {}.')
# Held out of image-text training by default: two classes per domain.
UNION_UNSEEN = ('Sandal', 'Shirt', '3 - three', '8 - eight')

_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}


@DATASETS.register_module()
class ENNUnionCaptions(ClassCaptionLayout, BaseDataset):
    """Fashion-MNIST (classes 0-9) and MNIST digits (classes 10-19), 28 x 28
    grayscale, with class-description captions.

    - ``test_mode=False`` (training): the images of the seen classes only
      (``unseen_classes`` never appear), ``text`` one caption of the image's
      class with a training template drawn at random on each access.
    - ``test_mode=True``: the images of every class; the first image of each
      class carries all captions of that class, every template with every
      phrasing (``text``, ``gt_text_id``,
      ``gt_image_id``), the others none, so each caption is embedded once.
      Evaluate with ``ENNClassImageTextRetrievalMetric``, whose
      ``class_splits`` reports seen and unseen classes apart.

    Every sample has ``gt_label`` (0-19) and ``image_id`` (its index).

    Args:
        data_roots (dict): Folders of the un-gzipped IDX files, keys
            ``'fashion_mnist'`` and ``'mnist'``.
        split (str): 'train' or 'test': which images.
        templates (Sequence[str], optional): Caption templates with one
            ``{}``. Defaults to ``UNION_TRAIN_TEMPLATES`` without
            ``test_mode`` and ``UNION_TEST_TEMPLATES`` with it.
        class_phrases (Sequence[Sequence[str] | str]): The phrasings of each
            class (20 entries; a string is one phrasing). Defaults to
            ``UNION_PHRASES`` (four per class).
        unseen_classes (Sequence[str]): Class names (of ``UNION_CLASSES``)
            left out of training. Defaults to ``UNION_UNSEEN``.
        images_per_class (int, optional): Keep the first this many images of
            each class (in file order), e.g. to balance the two sources.
            Defaults to None (all).
        test_mode (bool): The caption layout, see above.
        **kwargs: Other arguments of ``BaseDataset`` (``pipeline``, ...).

    Raises:
        ValueError: No template or a class with no phrasing (a class would
            have no caption), a template without exactly one ``{}``, a
            phrase count that is not 20, a split other than train/test, or
            an unseen class that is not a class name.
        KeyError: ``data_roots`` lacks one of its two keys.
        FileNotFoundError: IDX files of ``split`` are missing (raised when
            the data is loaded).
    """

    METAINFO = {'classes': UNION_CLASSES}

    def __init__(self, data_roots: Dict[str, str], split: str = 'train',
                 templates: Optional[Sequence[str]] = None,
                 class_phrases: Sequence[Union[Sequence[str], str]] = UNION_PHRASES,
                 unseen_classes: Sequence[str] = UNION_UNSEEN,
                 images_per_class: Optional[int] = None,
                 test_mode: bool = False, **kwargs):
        if split not in _FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        missing = {'fashion_mnist', 'mnist'} - set(data_roots)
        if missing:
            raise KeyError(f'data_roots needs the keys fashion_mnist and mnist; missing '
                           f'{sorted(missing)}')
        if templates is None:
            templates = UNION_TEST_TEMPLATES if test_mode else UNION_TRAIN_TEMPLATES
        self.templates = caption_templates(templates)
        if len(class_phrases) != len(UNION_CLASSES):
            raise ValueError(f'{len(class_phrases)} class phrases for '
                             f'{len(UNION_CLASSES)} classes')
        class_phrases = [(p, ) if isinstance(p, str) else tuple(p) for p in class_phrases]
        if not all(class_phrases):
            raise ValueError('a class has no phrasing: give every class at least one')
        unknown = [c for c in unseen_classes if c not in UNION_CLASSES]
        if unknown:
            raise ValueError(f'unseen classes {unknown} are not classes of the union; '
                             f'choose among {list(UNION_CLASSES)}')
        self.class_phrases = tuple(class_phrases)
        self.unseen = tuple(sorted(UNION_CLASSES.index(c) for c in unseen_classes))
        self.data_roots = dict(data_roots)
        self.split, self.images_per_class = split, images_per_class
        super().__init__(data_root='', test_mode=test_mode, **kwargs)

    def load_data_list(self):
        """Images of ``split`` from both sources, labels in 0-19; training
        drops the unseen classes."""
        labels, images = [], []
        for offset, key in ((0, 'fashion_mnist'), (10, 'mnist')):
            paths = [join_path(self.data_roots[key], f) for f in _FILES[self.split]]
            absent = [p for p in paths if not osp.isfile(p)]
            if absent:
                raise FileNotFoundError(
                    f'{key} IDX files not found: {absent} (Fashion-MNIST: '
                    'tools/prepare_fashion_mnist.sh; MNIST: tools/prepare_mnist.py)')
            images.append(read_image_file(paths[0]).numpy())
            labels.append(read_label_file(paths[1]).numpy().astype(np.int64) + offset)
        images, labels = np.concatenate(images), np.concatenate(labels)
        keep = np.ones(len(labels), bool)
        if not self.test_mode:
            keep &= ~np.isin(labels, self.unseen)
        if self.images_per_class is not None:
            rank = np.zeros(len(labels), np.int64)
            for c in np.unique(labels):
                rank[labels == c] = np.arange((labels == c).sum())
            keep &= rank < self.images_per_class
        return [dict(img=img, gt_label=np.array(y, dtype=np.int64))
                for img, y in zip(images[keep], labels[keep])]

    def caption(self, label: int, template: int, phrasing: int = 0) -> str:
        """The caption of class ``label`` in one template and phrasing.

        Args:
            label (int): Class index (0-19).
            template (int): Index into ``templates``.
            phrasing (int): Index into the class's phrasings. Defaults to 0.

        Returns:
            str: The template with the phrase filled in, first letter
            upper-cased (a phrase may open the sentence).
        """
        text = self.templates[template].format(self.class_phrases[label][phrasing])
        return text[0].upper() + text[1:]

    def captions_of(self, label: int) -> list:
        """Every caption of class ``label``: each template with each phrasing.

        Args:
            label (int): Class index (0-19).

        Returns:
            list[str]: Template-major, phrasing-minor.
        """
        return [self.caption(label, t, p) for t in range(len(self.templates))
                for p in range(len(self.class_phrases[label]))]

    def draw_caption(self, label: int) -> str:
        """A caption of class ``label``, template and phrasing drawn at random.

        Args:
            label (int): Class index.

        Returns:
            str: The caption.
        """
        return self.caption(label, draw(len(self.templates)), draw(len(self.class_phrases[label])))

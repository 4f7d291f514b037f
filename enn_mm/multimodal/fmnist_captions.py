"""``ENNFashionMNISTCaptions``: Fashion-MNIST images with class-description
captions, laid out like MMPretrain's ``COCORetrieval``.

This is *class-level* cross-modal retrieval: every caption describes a
class ("a photo of a sneaker."), not one particular image, so a caption is
relevant to every image of its class. It is an offline stand-in that
exercises the image-text pipeline on real images; it measures nothing about
grounding captions in image content.
"""
import os.path as osp
from typing import Optional, Sequence

import numpy as np
from mmengine.fileio import join_path
from mmpretrain.datasets import FashionMNIST
from mmpretrain.datasets.mnist import read_image_file, read_label_file
from mmpretrain.registry import DATASETS

from .class_captions import ClassCaptionLayout, caption_templates, draw

__all__ = ['ENNFashionMNISTCaptions', 'CLASS_PHRASES', 'TRAIN_TEMPLATES',
           'TEST_TEMPLATES']

# How the captions name the classes of FASHIONMNIST_CATEGORITES.
CLASS_PHRASES = ('t-shirt or top', 'pair of trousers', 'pullover', 'dress', 'coat',
                 'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot')
# Captions seen in training; the test split uses other wordings only, so
# retrieval has to generalize through the text encoder.
TRAIN_TEMPLATES = ('a photo of a {}.', 'a picture of a {}.', 'an image of a {}.',
                   'a grayscale photo of a {}.', 'a low-resolution photo of a {}.',
                   'a product photo of a {}.')
TEST_TEMPLATES = ('a black and white image showing a {}.',
                  'a small picture of the {}.', 'this is a {}.')


@DATASETS.register_module()
class ENNFashionMNISTCaptions(ClassCaptionLayout, FashionMNIST):
    """Fashion-MNIST (IDX files) with captions built from templates.

    - ``test_mode=False`` (training): one sample per image, ``text`` one
      caption of its class with a template drawn at random on each access.
    - ``test_mode=True``: one sample per image; the first image of each
      class carries all captions of that class (``text``, ``gt_text_id``,
      ``gt_image_id``), the others an empty list, so each caption is
      embedded once. Use :class:`ENNClassImageTextRetrievalMetric`, which
      makes a caption relevant to every image of its class.

    Every sample has ``gt_label`` and ``image_id`` (its index in the dataset).

    Args:
        data_root (str): Folder with the un-gzipped IDX files.
        split (str): 'train' or 'test': which images.
        templates (Sequence[str], optional): Caption templates with one
            ``{}`` for the class phrase. Defaults to ``TRAIN_TEMPLATES``
            without ``test_mode`` and ``TEST_TEMPLATES`` with it.
        class_phrases (Sequence[str]): One phrase per class.
        test_mode (bool): The caption layout, see above.
        **kwargs: Other arguments of ``FashionMNIST`` / ``BaseDataset``
            (``pipeline``, ``indices`` for a subset, ...). ``download`` is
            off: the files must be there.

    Raises:
        ValueError: No template, a template without exactly one ``{}``, or the
            number of class phrases is not the number of classes.
        FileNotFoundError: The IDX files of ``split`` are missing (raised
            when the data is loaded).
    """

    def __init__(self, data_root: str, split: str = 'train',
                 templates: Optional[Sequence[str]] = None,
                 class_phrases: Sequence[str] = CLASS_PHRASES,
                 test_mode: bool = False, **kwargs):
        if templates is None:
            templates = TEST_TEMPLATES if test_mode else TRAIN_TEMPLATES
        self.templates = caption_templates(templates)
        self.class_phrases = tuple(class_phrases)
        kwargs.setdefault('download', False)
        super().__init__(data_root=data_root, split=split, test_mode=test_mode, **kwargs)
        if len(self.class_phrases) != len(self.CLASSES):
            raise ValueError(f'{len(self.class_phrases)} class phrases for '
                             f'{len(self.CLASSES)} classes')

    def load_data_list(self):
        """Images of ``split`` (MNIST's loader picks files by test_mode)."""
        root = self.data_prefix['root']
        files = self.train_list if self.split == 'train' else self.test_list
        paths = [join_path(root, osp.splitext(f)[0]) for f, _ in files]
        missing = [p for p in paths if not osp.isfile(p)]
        if missing:
            raise FileNotFoundError(f'Fashion-MNIST IDX files not found: {missing} '
                                    '(tools/prepare_fashion_mnist.sh unpacks them)')
        imgs, labels = read_image_file(paths[0]), read_label_file(paths[1])
        return [dict(img=img.numpy(), gt_label=np.array(int(y), dtype=np.int64))
                for img, y in zip(imgs, labels)]

    def caption(self, label: int, template: int) -> str:
        """The caption of class ``label`` in template number ``template``.

        Args:
            label (int): Class index into ``class_phrases``.
            template (int): Index into ``templates``.

        Returns:
            str: The template with the class phrase filled in.
        """
        return self.templates[template].format(self.class_phrases[label])

    def captions_of(self, label: int) -> list:
        """Every caption of class ``label``, in template order.

        Args:
            label (int): Class index.

        Returns:
            list[str]: One caption per template.
        """
        return [self.caption(label, t) for t in range(len(self.templates))]

    def draw_caption(self, label: int) -> str:
        """A caption of class ``label`` in a template drawn at random.

        Args:
            label (int): Class index.

        Returns:
            str: The caption.
        """
        return self.caption(label, draw(len(self.templates)))

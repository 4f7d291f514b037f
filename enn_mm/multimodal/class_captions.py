"""The caption layout that class-level image-text data sets share."""
import numpy as np

__all__ = ['ClassCaptionLayout', 'caption_templates']


class ClassCaptionLayout:
    """Mixed in before an MMEngine ``BaseDataset`` whose samples have a
    ``gt_label``, it lays captions out as MMPretrain's ``COCORetrieval`` does:

    - ``test_mode=False``: every sample carries one caption of its class,
      ``draw_caption(label)``, drawn again on each access;
    - ``test_mode=True``: the first image of each class carries every caption
      of the class, ``captions_of(label)``, with ``gt_text_id`` (consecutive,
      classes in label order) and ``gt_image_id``; the other images carry
      none, so each caption is embedded once.

    Every sample also gets ``image_id`` (its index). Subclasses define
    ``captions_of`` and ``draw_caption``.
    """

    def captions_of(self, label: int) -> list:
        """Every caption of class ``label`` (evaluation).

        Args:
            label (int): Class index.

        Returns:
            list[str]: The captions.
        """
        raise NotImplementedError

    def draw_caption(self, label: int) -> str:
        """One caption of class ``label`` for a training access.

        Args:
            label (int): Class index.

        Returns:
            str: The caption.
        """
        raise NotImplementedError

    def full_init(self):
        if self._fully_initialized:
            return
        super().full_init()
        # after `indices` subsetting: the image that carries each class's captions
        self._owner = {}
        if self.test_mode:
            base = super().get_data_info
            for idx in range(len(self)):
                self._owner.setdefault(int(base(idx)['gt_label']), idx)
        self._first_id, start = {}, 0
        for label in sorted(self._owner):
            self._first_id[label] = start
            start += len(self.captions_of(label))
        self.img_size = len(self)
        self.text_size = start

    def get_data_info(self, idx: int) -> dict:
        """The annotation of sample ``idx`` with ``image_id`` and captions.

        Args:
            idx (int): Index of the sample.

        Returns:
            dict: The parent's annotation (``img``, ``gt_label``, ...) plus
            ``image_id`` (``idx``) and ``text`` laid out as the class
            docstring says (with ``gt_text_id`` and ``gt_image_id`` in test
            mode).
        """
        info = super().get_data_info(idx)
        label = int(info['gt_label'])
        info['image_id'] = idx
        if not self.test_mode:
            info['text'] = self.draw_caption(label)
        elif self._owner[label] == idx:
            captions = self.captions_of(label)
            first = self._first_id[label]
            info['text'] = captions
            info['gt_text_id'] = list(range(first, first + len(captions)))
            info['gt_image_id'] = [idx] * len(captions)
        else:
            info['text'], info['gt_text_id'], info['gt_image_id'] = [], [], []
        return info


def caption_templates(templates) -> tuple:
    """``templates`` as a tuple, each checked to hold one ``{}`` for the
    class phrase.

    Args:
        templates (Sequence[str]): Caption templates.

    Returns:
        tuple[str]: The templates.

    Raises:
        ValueError: No template (a class would have no caption), or one
            without exactly one ``{}``.
    """
    templates = tuple(templates)
    if not templates:
        raise ValueError('no caption template: every class needs at least one caption; '
                         'pass templates=None for the built-in lists')
    for t in templates:
        if t.count('{}') != 1:
            raise ValueError(f'caption template {t!r} needs exactly one {{}}')
    return templates


def draw(n: int) -> int:
    """A random index below ``n`` from numpy's global stream (what the
    dataloader workers seed)."""
    return int(np.random.randint(n))

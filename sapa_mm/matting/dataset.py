"""Composition-1K in mmagic's layout.

``data_root`` (``data/adobe_composition-1k``) holds the two lists mmagic's converter
(``tools/dataset_converters/comp1k/preprocess_comp1k_dataset.py``) writes, JSON arrays of
entries whose paths are relative to ``data_root``::

    training_list.json   {"alpha_path": ..., "fg_path": ..., "bg_path": ..., "merged_path": ...}
    test_list.json       {"alpha_path": ..., "fg_path": ..., "bg_path": ..., "merged_path": ...,
                          "trimap_path": ...}

Training composites the foreground online (``merged_path`` is not read); with
``random_bg=True`` each draw takes the background of a random entry of the list (the
A2U setting: every background of the list, in random pairs). Testing reads the
composite, the alpha and the trimap.

The list is checked when the data set is built: it must be a JSON array of objects,
every entry must name the files the split needs (a foreground without an alpha is an
error), and every file must exist. A problem raises
:class:`~sapa_mm.matting.errors.MattingInputError` naming the list, the entry and the file.
"""
import json
import os.path as osp
from typing import List, Sequence

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

from .errors import MattingInputError

__all__ = ['Comp1kDataset', 'read_comp1k_list', 'TRAIN_KEYS', 'TEST_KEYS']

TRAIN_KEYS = ('alpha_path', 'fg_path', 'bg_path')
TEST_KEYS = ('merged_path', 'alpha_path', 'trimap_path')
PATH_KEYS = ('alpha_path', 'fg_path', 'bg_path', 'merged_path', 'trimap_path')


def read_comp1k_list(ann_file: str, data_root: str = '', required: Sequence[str] = TRAIN_KEYS) -> List[dict]:
    """The entries of a Composition-1K list with paths joined to ``data_root``; raises
    ``MattingInputError`` for a list that does not parse, an entry without a path it
    needs, a foreground without an alpha, or a file that does not exist."""
    if not osp.isfile(ann_file):
        raise MattingInputError(f"Composition-1K list '{ann_file}' does not exist")
    try:
        with open(ann_file, encoding='utf-8') as f:
            entries = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MattingInputError(f"Composition-1K list '{ann_file}' is not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise MattingInputError(f"Composition-1K list '{ann_file}' must be a JSON array of objects "
                                'with alpha_path, fg_path, bg_path, ... (mmagic\'s layout)')
    if not entries:
        raise MattingInputError(f"Composition-1K list '{ann_file}' is empty")
    data_list = []
    for i, entry in enumerate(entries):
        where = f"entry {i} of '{ann_file}'"
        if entry.get('fg_path') and not entry.get('alpha_path'):
            raise MattingInputError(f"{where}: foreground '{entry['fg_path']}' has no alpha_path")
        missing = [k for k in required if not entry.get(k)]
        if missing:
            raise MattingInputError(f"{where} has no {', '.join(missing)}")
        info = {}
        for key in PATH_KEYS:
            if entry.get(key):
                path = osp.join(data_root, entry[key])
                if key in required and not osp.isfile(path):
                    raise MattingInputError(f"{where}: {key} '{path}' does not exist")
                info[key] = path
        data_list.append(info)
    return data_list


@DATASETS.register_module()
class Comp1kDataset(BaseDataset):
    """Composition-1K (Adobe Deep Image Matting) from mmagic's JSON lists.

    Args:
        ann_file: ``training_list.json`` or ``test_list.json`` (relative to data_root).
        data_root: ``data/adobe_composition-1k``.
        pipeline: the transforms (:mod:`sapa_mm.matting.transforms`).
        test_mode: True for the test split (needs merged, alpha and trimap).
        random_bg: draw the background of each training sample from a random entry.
    """

    METAINFO = dict(name='Composition-1K')

    def __init__(self, ann_file: str = '', data_root: str = '', pipeline=(), test_mode: bool = False,
                 random_bg: bool = False, **kwargs):
        self.random_bg = random_bg
        super().__init__(ann_file=ann_file, data_root=data_root, pipeline=list(pipeline),
                         test_mode=test_mode, **kwargs)

    def load_data_list(self) -> List[dict]:
        required = TEST_KEYS if self.test_mode else TRAIN_KEYS
        return read_comp1k_list(self.ann_file, self.data_root or '', required)

    def get_data_info(self, idx: int) -> dict:
        info = super().get_data_info(idx)
        if self.random_bg and not self.test_mode:
            other = super().get_data_info(np.random.randint(len(self)))
            info['bg_path'] = other['bg_path']
        return info

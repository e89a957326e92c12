"""Checks that a config's datasets are on disk, with one clear message if not.

``check_data_roots(cfg)`` walks the config's dataloaders (wrapped datasets
included), and for every dataset whose files are missing raises one
``FileNotFoundError`` that says which path is missing, where to get the data set
and how to lay it out. ``tools/train.py`` / ``tools/test.py`` call
``require_data_roots`` (the same check, reported as a one-line ``error:``) before
building the Runner, so a machine without ADE20K or COCO gets that message instead
of a traceback from inside a loader. This module holds no datasets.
"""
import os.path as osp
import re
from typing import Iterable, Iterator, List, Optional, Tuple

from .errors import UserError

__all__ = ['check_data_roots', 'require_data_roots', 'missing_data', 'HOW_TO_GET']

HOW_TO_GET = {
    'ADE20K': """\
ADE20K (the MIT Scene Parsing benchmark, 150 classes) is not at {root}.
Get it from http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip
(about 923 MB) and unzip it under data/ade, so that the layout is

  data/ade/ADEChallengeData2016/
    images/training/ADE_train_*.jpg         20,210 images
    images/validation/ADE_val_*.jpg          2,000 images
    annotations/training/ADE_train_*.png
    annotations/validation/ADE_val_*.png

(run from the repository root, or link an existing copy:
 mkdir -p data/ade && ln -s /path/to/ADEChallengeData2016 data/ade/)""",
    'COCO': """\
COCO 2017 is not at {root}.
Get it from https://cocodataset.org/#download: train2017.zip, val2017.zip and
annotations_trainval2017.zip (http://images.cocodataset.org/zips/train2017.zip,
.../zips/val2017.zip, .../annotations/annotations_trainval2017.zip), and unzip
them into data/coco, so that the layout is

  data/coco/
    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/*.jpg                          118,287 images
    val2017/*.jpg                              5,000 images

(run from the repository root, or link an existing copy:
 ln -s /path/to/coco data/coco)""",
    'COCO panoptic': """\
COCO 2017 panoptic is not at {root}.
Get it from https://cocodataset.org/#download: train2017.zip, val2017.zip and
panoptic_annotations_trainval2017.zip
(http://images.cocodataset.org/annotations/panoptic_annotations_trainval2017.zip;
it holds panoptic_{{train,val}}2017.json and panoptic_{{train,val}}2017.zip, unzip
those two into annotations/ as well), so that the layout is

  data/coco/
    annotations/panoptic_train2017.json
    annotations/panoptic_train2017/*.png
    annotations/panoptic_val2017.json
    annotations/panoptic_val2017/*.png
    train2017/*.jpg                          118,287 images
    val2017/*.jpg                              5,000 images

(run from the repository root, or link an existing copy:
 ln -s /path/to/coco data/coco)""",
    'NYU Depth v2': (
        'NYU Depth v2 (images/ and annotations/, train/ and test/) is not at {root}: get the '
        'raw frames from https://cs.nyu.edu/~silberman/datasets/nyu_depth_v2.html as BTS\'s '
        '"sync" training set and the 654 official test frames with their lists nyu_train.txt '
        '/ nyu_test.txt (a nyu.zip holding nyu/, as mmseg\'s dataset guide describes), then '
        'run mmseg\'s `python tools/dataset_converters/nyu.py nyu.zip -o data/nyu`, or point '
        'data_root at a converted copy (--cfg-options train_dataloader.dataset.data_root=...)'),
    'Composition-1K': (
        'Composition-1K (training_list.json / test_list.json with Training_set/ and Test_set/) '
        'is not at {root}: it is built from the Adobe Deep Image Matting data set, which Adobe '
        'licenses on request (https://sites.google.com/view/deepimagematting), with backgrounds '
        'from COCO train2014 (training) and PASCAL VOC2012 (test); composite it with mmagic\'s '
        'converter (`python tools/dataset_converters/comp1k/preprocess_comp1k_dataset.py '
        'data/adobe_composition-1k data/coco data/VOCdevkit --composite` in an mmagic checkout), '
        'which writes the two lists, or point data_root at a prepared copy (--cfg-options '
        'train_dataloader.dataset.data_root=...; docs/matting.md)'),
}

_GENERIC = """\
The {kind} data set is not at {root}.
Put it there, or point the config's data_root at it
(e.g. --cfg-options train_dataloader.dataset.data_root=/path/to/data)."""


def _kind(dataset_type: str) -> str:
    t = str(dataset_type).lower()
    if 'ade' in t:
        return 'ADE20K'
    if 'coco' in t and 'panoptic' in t:
        return 'COCO panoptic'
    if 'coco' in t and 'stuff' not in t:
        return 'COCO'
    if 'nyu' in t:
        return 'NYU Depth v2'
    if 'comp1k' in t:
        return 'Composition-1K'
    return str(dataset_type)


def _datasets(ds) -> Iterator[dict]:
    """Leaf dataset configs of a (possibly wrapped) dataset config."""
    if ds is None:
        return
    if isinstance(ds, (list, tuple)):
        for d in ds:
            yield from _datasets(d)
        return
    if not hasattr(ds, 'get'):
        return
    if ds.get('dataset') is not None:  # RepeatDataset, ClassBalancedDataset, ...
        yield from _datasets(ds.get('dataset'))
    elif ds.get('datasets') is not None:  # ConcatDataset
        yield from _datasets(ds.get('datasets'))
    else:
        yield ds


def _paths(ds) -> List[str]:
    """The files and folders a dataset config reads, resolved as the loaders do."""
    root = ds.get('data_root') or ''
    paths = []
    ann = ds.get('ann_file')
    if ann:
        paths.append(ann if osp.isabs(ann) or ann.startswith(root) else osp.join(root, ann))
    prefix = ds.get('data_prefix') or {}
    if hasattr(prefix, 'values'):
        for p in prefix.values():
            if isinstance(p, str) and p:
                paths.append(p if osp.isabs(p) else osp.join(root, p))
    if not paths and root:
        paths.append(root)
    return paths


def _is_url(path: str) -> bool:
    """``s3://...``, ``petrel://...``, ``http(s)://...``: a path the local disk cannot check."""
    return bool(re.match(r'[A-Za-z][A-Za-z0-9+.-]*://', path))


def _remote(ds) -> bool:
    """A dataset read through a storage backend (``backend_args`` / a
    ``file_client_args`` other than the local disk) or from a URL: not checked here;
    the loaders report what they cannot read."""
    for key in ('backend_args', 'file_client_args'):
        args = ds.get(key)
        if args and (args.get('backend') or 'local') not in ('local', 'disk'):
            return True
    return any(_is_url(p) for p in _paths(ds))


def missing_data(cfg, splits: Iterable[str] = ('train', 'val', 'test')
                 ) -> List[Tuple[str, str, str, str]]:
    """``(split, kind, data_root, first missing path)`` for every dataset of the
    given splits (``'train'`` or ``'train_dataloader'``, ...) whose files are not on
    disk. Relative paths are taken from the current directory, as the loaders do.
    Datasets on remote storage (URLs, ``backend_args``) are not checked."""
    missing = []
    for split in splits:
        split = split[:-len('_dataloader')] if split.endswith('_dataloader') else split
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for ds in _datasets(loader.get('dataset')):
            if _remote(ds):
                continue
            for path in _paths(ds):
                if path and not osp.exists(path):
                    missing.append((split, _kind(ds.get('type', 'dataset')),
                                    ds.get('data_root') or osp.dirname(path), path))
                    break
    return missing


def check_data_roots(cfg, splits: Optional[Iterable[str]] = None) -> None:
    """Raise ``FileNotFoundError`` with where to get the data and how to lay it out
    if any dataset of ``cfg`` (all its dataloaders by default) is missing."""
    missing = missing_data(cfg, splits or ('train', 'val', 'test'))
    if not missing:
        return
    seen, parts = set(), []
    for split, kind, root, path in missing:
        if (kind, root) in seen:
            continue
        seen.add((kind, root))
        text = HOW_TO_GET.get(kind, _GENERIC).format(root=root, kind=kind)
        parts.append(f'{text}\n(missing for the {split} split: {path})')
    raise FileNotFoundError('\n\n'.join(parts))


def _dataset_roots(dataset, where):
    """(config key, data_root) for a dataset config and the datasets it wraps."""
    if not isinstance(dataset, dict):
        return
    root = dataset.get('data_root')
    if isinstance(root, str) and root and '://' not in root:
        yield f'{where}.data_root', root
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_roots(dataset['dataset'], f'{where}.dataset')
    for i, sub in enumerate(dataset.get('datasets') or []):
        yield from _dataset_roots(sub, f'{where}.datasets.{i}')


def require_data_roots(cfg, loaders):
    """Fail early with :class:`~sapa_mm.tools.errors.UserError`, saying where to get
    the data, when a dataset of the dataloaders ``loaders`` is missing.

    A config may add its own advice with a top-level ``data_hint`` string
    (e.g. how to generate the data), appended to the message. After
    :func:`check_data_roots` (which knows ADE20K / COCO), every ``data_root`` must
    also be a directory.
    """
    hint = cfg.get('data_hint')
    hint = f'\n{hint}' if isinstance(hint, str) and hint else ''
    try:
        check_data_roots(cfg, loaders)
    except FileNotFoundError as exc:
        raise UserError(f'{exc}{hint}') from None
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for key, root in _dataset_roots(loader_cfg.get('dataset'),
                                        f'{loader}.dataset'):
            if not osp.isdir(root):
                raise UserError(
                    f"dataset root '{root}' ({key}) does not exist; create the "
                    'data there or point the config at it, e.g. --cfg-options '
                    f'{key}=/path/to/data{hint}')
    _check_depth_files(cfg, loaders, hint)
    _check_matting_lists(cfg, loaders, hint)


def _check_depth_files(cfg, loaders, hint):
    """NYU-layout depth datasets: every file name, depth PNG and size checked before
    the Runner writes anything (:mod:`sapa_mm.depth.checks`)."""
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for ds in _datasets(loader_cfg.get('dataset')):
            if _kind(ds.get('type', '')) != 'NYU Depth v2' or _remote(ds):
                continue
            from ..depth.checks import DepthDataError, check_nyu_split
            root = ds.get('data_root') or ''
            prefix = ds.get('data_prefix') or {}
            img_dir = osp.join(root, prefix.get('img_path', 'images'))
            depth_dir = prefix.get('depth_map_path', 'annotations')
            try:
                check_nyu_split(img_dir, depth_dir and osp.join(root, depth_dir),
                                ds.get('img_suffix', '.jpg'), ds.get('depth_map_suffix', '.png'))
            except DepthDataError as exc:
                raise UserError(f'{exc}{hint}') from None


def _check_matting_lists(cfg, loaders, hint):
    """Composition-1K lists: every entry names the files its split needs and they exist,
    checked before the Runner writes anything (:func:`sapa_mm.matting.read_comp1k_list`)."""
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for ds in _datasets(loader_cfg.get('dataset')):
            if _kind(ds.get('type', '')) != 'Composition-1K' or _remote(ds):
                continue
            from ..matting.dataset import TEST_KEYS, TRAIN_KEYS, read_comp1k_list
            from ..matting.errors import MattingInputError
            root = ds.get('data_root') or ''
            ann = ds.get('ann_file') or ''
            ann = ann if osp.isabs(ann) else osp.join(root, ann)
            try:
                read_comp1k_list(ann, root, TEST_KEYS if ds.get('test_mode') else TRAIN_KEYS)
            except MattingInputError as exc:
                raise UserError(f'{exc}{hint}') from None

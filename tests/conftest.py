"""Fixtures only; the shared helpers are in tests/helpers.py."""
import sys

import pytest

from helpers import (DET_CONFIG, SEG_CONFIG, check_ok, make_coco_dataset, make_seg_dataset,
                     run_tool, tool_env)


def _restoring_default_scope():
    mod = sys.modules.get('mmengine.registry.default_scope')
    saved = dict(mod.DefaultScope._instance_dict) if mod else {}
    yield
    mod = sys.modules.get('mmengine.registry.default_scope')
    if mod is not None:
        instances = mod.DefaultScope._instance_dict
        instances.clear()
        instances.update(saved)


@pytest.fixture(autouse=True)
def _isolate_default_scope():
    """Undo the mmengine default scope a test set (e.g. by building a Runner).

    ``Registry.build`` resolves types in the *current* default scope, so a test
    that leaves 'mmdet' current would make a later ``mmseg`` build fail.
    """
    yield from _restoring_default_scope()


@pytest.fixture(autouse=True, scope='module')
def _isolate_default_scope_of_module_fixtures():
    """The same around a whole module: its module-scoped fixtures (test_flops.py's
    model builds) set the scope outside any one test."""
    yield from _restoring_default_scope()


@pytest.fixture(scope='session')
def seg_data(tmp_path_factory):
    """The demo segmentation set, 8 + 4 images of 64x64 (tests/configs/tiny_seg.py)."""
    return make_seg_dataset(str(tmp_path_factory.mktemp('tiny_seg')))


@pytest.fixture(scope='session')
def demo_seg_data(tmp_path_factory):
    """The demo segmentation set, 64 + 16 images of 128x128 (end-to-end runs of the demo
    configs: resume, scale-out)."""
    return make_seg_dataset(str(tmp_path_factory.mktemp('demo_seg')), n_train=64, n_val=16,
                            size=128)


@pytest.fixture(scope='session')
def full_demo_data(tmp_path_factory):
    """The demo data root at its full size (what tools/demo.py builds: seg 240 + 60
    images of 256x256, the COCO set built by the runs that need it)."""
    from sapa_mm.demo import data
    root = str(tmp_path_factory.mktemp('demo_data'))
    data.ensure(root, only=('seg', ), quiet=True)
    return root


@pytest.fixture(scope='session')
def det_data(tmp_path_factory):
    """The demo instance set, 6 + 3 images of 128x128 (tests/configs/tiny_det.py)."""
    return make_coco_dataset(str(tmp_path_factory.mktemp('tiny_det')))


def _train_tiny(config, data_var, data, work_dir):
    proc = run_tool(['train.py', config, '--work-dir', work_dir], env=tool_env(**{data_var: data}))
    check_ok(proc)
    return dict(work_dir=work_dir, proc=proc, data=data)


@pytest.fixture(scope='session')
def seg_trained(seg_data, tmp_path_factory):
    """tools/train.py on tiny_seg: 4 iterations, checkpoints at 2 and 4."""
    work_dir = str(tmp_path_factory.mktemp('seg_work'))
    return _train_tiny(SEG_CONFIG, 'TINY_SEG_ROOT', seg_data, work_dir)


@pytest.fixture(scope='session')
def det_trained(det_data, tmp_path_factory):
    """tools/train.py on tiny_det: 2 iterations, checkpoints at 1 and 2."""
    work_dir = str(tmp_path_factory.mktemp('det_work'))
    return _train_tiny(DET_CONFIG, 'TINY_DET_ROOT', det_data, work_dir)

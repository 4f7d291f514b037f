"""The shipped configs: MMPretrain's _base_ layout, rendered as recorded.

``tests/configs/rendered_configs.json`` holds every config under ``configs/``
as mmengine renders it (bases merged, ``{{_base_.x}}`` substituted). A config
change that alters what the Runner receives shows up here; after an intended
change, refresh the record with ``python tests/configs/test_configs.py --update``.
"""
import glob
import json
import os.path as osp
import sys

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECORD = osp.join(REPO, 'tests', 'configs', 'rendered_configs.json')
# Module-level helper variables of the _base_ files: never read by the Runner.
HELPERS = {'dataset_type', 'data_root', 'train_pipeline', 'test_pipeline'}


def leaf_configs():
    return sorted(osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                                                           recursive=True)
                  if '/_base_/' not in p)


def render(path: str) -> dict:
    cfg = Config.fromfile(osp.join(REPO, path)).to_dict()
    return json.loads(json.dumps(cfg, sort_keys=True, default=repr))


def strip(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in HELPERS}


@pytest.mark.parametrize('path', leaf_configs())
def test_config_renders_as_recorded(path):
    with open(RECORD) as f:
        record = json.load(f)
    assert path in record, f'{path} is new: python tests/configs/test_configs.py --update'
    assert strip(render(path)) == strip(record[path])


@pytest.mark.parametrize('path', leaf_configs())
def test_loop_configs_build(path):
    """mmengine's Runner refuses a loop config with both ``type`` and
    ``by_epoch`` (``Only one of `type` or `by_epoch` can exist``): a config
    that names its loop must replace the base's train_cfg (``_delete_``)."""
    cfg = Config.fromfile(osp.join(REPO, path))
    for key in ('train_cfg', 'val_cfg', 'test_cfg'):
        loop = cfg.get(key) or {}
        assert not ('type' in loop and 'by_epoch' in loop), (path, key, loop)


def test_every_recorded_config_exists():
    with open(RECORD) as f:
        assert sorted(json.load(f)) == leaf_configs()


def test_data_settings_live_in_one_file_per_data_set():
    """A recipe change is one line in one file: no leaf config of the
    Fashion-MNIST / MNIST families sets data, model or schedule itself."""
    families = [p for p in leaf_configs() if p.split('/')[1] in ('baseline', 'enn', 'enn_local')
                and 'resnet18w16' in p]
    assert len(families) >= 14
    for path in families:
        text = open(osp.join(REPO, path)).read()
        for key in ('data_root', 'train_dataloader = dict(dataset', 'param_scheduler',
                    'data_preprocessor', "type='ResNet_CIFAR'"):
            assert key not in text, (path, key)


if __name__ == '__main__' and sys.argv[1:] == ['--update']:
    with open(RECORD, 'w') as f:
        json.dump({p: render(p) for p in leaf_configs()}, f, indent=0, sort_keys=True)
    print(f'wrote {RECORD}')

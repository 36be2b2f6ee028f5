import numpy as np
import pytest
from PIL import Image

from edgeprune.data import Preprocessing, load_data
from edgeprune.errors import ConfigError, DataError


def test_digits_split_is_deterministic_and_disjoint(digits):
    again = load_data("digits", Preprocessing())
    assert digits.train.indices == again.train.indices
    assert not set(digits.train.indices) & set(digits.val.indices)
    x, _ = digits.train[0]
    assert x.shape == (1, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert digits.preprocessing.resize == (32, 32)


def _write_folder(root, classes=("a", "b"), per_class=5, size=12):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_with_resize_and_normalisation(tmp_path):
    _write_folder(tmp_path / "train")
    prep = Preprocessing(resize=(8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    bundle = load_data(f"imagefolder:{tmp_path / 'train'}", prep)
    assert bundle.num_classes == 2 and bundle.sample_shape == (3, 8, 8)
    assert len(bundle.train) + len(bundle.val) == 10
    x, _ = bundle.val[0]
    assert float(x.min()) < 0  # normalised, not [0, 1]


def test_separate_val_folder_must_match_classes(tmp_path):
    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "val", classes=("a", "c"))
    with pytest.raises(DataError, match="class folders differ"):
        load_data(f"imagefolder:{tmp_path / 'train'}", Preprocessing(), f"imagefolder:{tmp_path / 'val'}")


def test_missing_and_empty_data(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'nope'}", Preprocessing())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        load_data(f"imagefolder:{tmp_path / 'empty'}", Preprocessing())
    with pytest.raises(ConfigError):
        load_data("mnist", Preprocessing())

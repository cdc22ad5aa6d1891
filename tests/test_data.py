"""Input pipeline: the offline Fashion-MNIST builder, mocked TFDS datasets, determinism, sharding, errors.

Truths are independent of effscale.data: pixels and labels come from decoding the IDX files here
with numpy, crop windows are worked out by hand.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import default
from effscale import data, fashion_mnist

IDX_DIR = "/usr/share/datasets/fashion-mnist"
needs_idx = pytest.mark.skipif(
    not os.path.isfile(os.path.join(IDX_DIR, "t10k-labels-idx1-ubyte.gz")),
    reason="apt-get install dataset-fashion-mnist",
)


def _idx(name: str) -> np.ndarray:
    """Independent IDX decode: 16-byte header for images (N, 28, 28), 8-byte header for labels."""
    with gzip.open(os.path.join(IDX_DIR, name)) as f:
        raw = f.read()
    if "images" in name:
        return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(raw, np.uint8, offset=8)


@pytest.fixture(scope="session")
def fm_dir(request, tmp_path_factory) -> str:
    """TFDS data_dir with our Fashion-MNIST prepared; kept in pytest's cache so later runs skip the ~15 s build
    (a fresh one per session under -p no:cacheprovider)."""
    cache = getattr(request.config, "cache", None)
    return str(cache.mkdir("effscale_tfds") if cache else tmp_path_factory.mktemp("effscale_tfds"))


@pytest.fixture
def fm_cfg(fm_dir):
    c = default.get_config().data
    c.name = "fashion_mnist"
    c.data_dir = fm_dir
    c.threads = 1
    return c


def _raw_view(c, split_key: str, split: str):
    """Config under which a 28-px image passes through unchanged: no crop, flip or normalisation."""
    c[split_key] = split
    c.train_crop = "none"
    c.flip = False
    c.eval_crop_padding = 0
    c.mean = (0.0, 0.0, 0.0)
    c.std = (1.0, 1.0, 1.0)
    return c


def _as_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] RGB float images -> uint8 of one channel (after checking the three are equal)."""
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    return np.round(images[..., 0] * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian IDX files


@needs_idx
def test_fashion_mnist_builder_matches_idx_files(fm_cfg):
    info = data.dataset_info(fm_cfg)
    # The split sizes prepare the dataset on first use (kept in pytest's cache between runs); the last
    # 5,000 of the 60,000 training images are held out for validation.
    assert (info.name, info.num_classes, info.train_examples, info.eval_examples, info.validation_examples) == (
        "fashion_mnist",
        10,
        55_000,
        10_000,
        5_000,
    )

    builder = fashion_mnist.FashionMnistIdx(data_dir=fm_cfg.data_dir)
    for split, prefix, picks in (("train", "train", [0, 1, 59_999]), ("test", "t10k", [0, 4321, 9_999])):
        images, labels = _idx(f"{prefix}-images-idx3-ubyte.gz"), _idx(f"{prefix}-labels-idx1-ubyte.gz")
        for i in picks:
            (ex,) = tfds.as_numpy(builder.as_dataset(split=f"{split}[{i}:{i + 1}]"))
            np.testing.assert_array_equal(ex["image"][..., 0], images[i])
            assert ex["label"] == labels[i]


@needs_idx
def test_eval_shards_cover_every_example_once(fm_cfg):
    c = _raw_view(fm_cfg, "eval_split", "test[:101]")  # odd: shares of 51 and 50, neither a batch multiple
    runs = [list(data.eval_batches(c, 28, 16, process_index=p, process_count=2)) for p in (0, 1)]
    assert len(runs[0]) == len(runs[1]) == data.eval_steps(c, 16, process_count=2) == 4
    batch = runs[0][0]
    assert batch["image"].shape == (16, 28, 28, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool

    kept = [
        (b["image"][b["mask"]], b["label"][b["mask"]]) for run in runs for b in run
    ]  # process 0's share comes first
    images = _as_uint8(np.concatenate([k[0] for k in kept]))
    labels = np.concatenate([k[1] for k in kept])
    np.testing.assert_array_equal(images, _idx("t10k-images-idx3-ubyte.gz")[:101])
    np.testing.assert_array_equal(labels, _idx("t10k-labels-idx1-ubyte.gz")[:101])
    assert all(not b["image"][~b["mask"]].any() for run in runs for b in run)


@needs_idx
def test_train_shards_are_disjoint_within_an_epoch(fm_cfg):
    c = _raw_view(fm_cfg, "train_split", "train[:200]")
    c.validation = "none"  # all 200 train
    truth = {
        img.tobytes(): lbl
        for img, lbl in zip(
            _idx("train-images-idx3-ubyte.gz")[:200], _idx("train-labels-idx1-ubyte.gz")[:200], strict=True
        )
    }
    seen = []
    for p in (0, 1):
        stream = data.train_batches(c, 28, 10, seed=3, process_index=p, process_count=2)
        epoch = [next(stream) for _ in range(200 // 20)]
        images = _as_uint8(np.concatenate([b["image"] for b in epoch]))
        labels = np.concatenate([b["label"] for b in epoch])
        keys = [img.tobytes() for img in images]
        assert all(truth[k] == lbl for k, lbl in zip(keys, labels, strict=True))
        seen.append(set(keys))
    assert len(seen[0]) == len(seen[1]) == 100 and not seen[0] & seen[1]


@needs_idx
@pytest.mark.parametrize("cache", [False, True])
def test_resume_matches_uninterrupted_stream(fm_cfg, cache):
    fm_cfg.train_split = "train[:200]"  # 180 train (20 held out): 11 steps per epoch at batch 16; 10 -> 15 crosses one
    fm_cfg.cache = cache
    stream = data.train_batches(fm_cfg, 16, 16, seed=7)
    full = [next(stream) for _ in range(16)]
    resumed = data.train_batches(fm_cfg, 16, 16, seed=7, start_step=10)
    for expected in full[10:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])
    assert not np.array_equal(full[0]["label"], full[12]["label"])  # reshuffled each epoch

    other = next(data.train_batches(fm_cfg, 16, 16, seed=8))
    assert not np.array_equal(other["image"], full[0]["image"])


# ---------------------------------------------------------------------------------------------
# Any TFDS dataset (mocked)


def _mock_splits(**sizes: int):
    """Split sizes for mocked builders, which have none of their own."""
    splits = tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0) for name, n in sizes.items()]
    )
    return mock.patch.object(tfds.core.DatasetInfo, "splits", new_callable=mock.PropertyMock, return_value=splits)


@pytest.mark.parametrize(
    ("name", "num_classes", "eval_split"), [("cifar10", 10, "test"), ("imagenet2012", 1000, "validation")]
)
def test_mocked_tfds_datasets(tmp_path, name, num_classes, eval_split):
    c = default.get_config().data
    c.name = name
    c.manual_dir = str(tmp_path)  # imagenet2012 needs one; the mock never reads it
    c.threads = 1
    # The mock yields num_examples for any split or slice of one, so both splits get that size. Neither dataset
    # has a validation split apart from its eval split: the last of the 10 training examples is held out.
    with (
        tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE),
        _mock_splits(train=10, **{eval_split: 10}),
    ):
        info = data.dataset_info(c)
        sizes = (info.train_examples, info.validation_examples, info.eval_examples)
        assert (info.name, info.num_classes, *sizes) == (name, num_classes, 9, 1, 10)
        train = next(data.train_batches(c, 40, 8, seed=0))
        evals = list(data.eval_batches(c, 40, 8))
    assert train["image"].shape == (8, 40, 40, 3) and train["image"].dtype == np.float32
    assert train["label"].shape == (8,) and train["label"].dtype == np.int32
    assert len(evals) == 2 and sum(b["mask"].sum() for b in evals) == 10
    for batch in [train, *evals]:
        assert np.isfinite(batch["image"]).all()
        assert ((batch["label"] >= 0) & (batch["label"] < num_classes)).all()


# ---------------------------------------------------------------------------------------------
# Errors and preprocessing arithmetic


def test_unknown_dataset_name_is_a_clear_error():
    c = default.get_config().data
    c.name = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset_xyz'"):
        data.dataset_info(c)


def test_missing_fashion_mnist_files_say_how_to_get_them(tmp_path):
    c = default.get_config().data
    c.name = "fashion_mnist"
    c.manual_dir = str(tmp_path)
    c.data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist") as err:
        data.dataset_info(c)
    assert str(tmp_path) in str(err.value)


def test_unprepared_dataset_says_where_it_looked(tmp_path):
    c = default.get_config().data
    c.name = "imagenet2012"  # manual download only: fails at once, offline
    c.data_dir = str(tmp_path)
    info = data.dataset_info(c)
    assert info.num_classes == 1000  # TFDS metadata: nothing prepared, nothing read
    with pytest.raises(ValueError, match="(?s)not prepared in .*tfds build imagenet2012") as err:
        info.train_examples  # noqa: B018 (the split sizes need the data)
    assert str(tmp_path) in str(err.value)


@needs_idx
def test_dataset_info_reads_metadata_only(tmp_path, fm_cfg):
    """The class count without preparing anything (a fresh data_dir stays empty); split sizes counted when asked."""
    fresh = default.get_config().data
    fresh.name, fresh.data_dir, fresh.classes = "fashion_mnist", str(tmp_path), (7, 5, 9)
    assert data.dataset_info(fresh).num_classes == 3
    assert list(tmp_path.iterdir()) == []

    fm_cfg.classes = (7, 5, 9)
    info = data.dataset_info(fm_cfg)
    fm_cfg.classes = None  # the info keeps the config as it was when asked
    assert info.eval_examples == int(np.isin(_idx("t10k-labels-idx1-ubyte.gz"), (7, 5, 9)).sum())
    # Validation is carved from the training images by index (the last 5,000), then filtered like them.
    labels = _idx("train-labels-idx1-ubyte.gz")
    assert info.train_examples == int(np.isin(labels[:55_000], (7, 5, 9)).sum())
    assert info.validation_examples == int(np.isin(labels[55_000:], (7, 5, 9)).sum())


def test_given_split_sizes_are_used_as_they_are():
    info = data.DatasetInfo("synthetic", 10, 64, 16)
    assert (info.train_examples, info.eval_examples) == (64, 16)
    with pytest.raises(ValueError, match="neither split sizes"):
        data.DatasetInfo("synthetic", 10).train_examples  # noqa: B018


def test_center_crop_window_by_hand():
    # 224 px, padding 32: crop 224/256 = 0.875 of the shorter side, centred.
    assert data.center_crop_window(256, 320, 224, 32) == (16, 48, 224)
    # 28-px image: int(0.875 * 28) = 24, offset (28 - 24 + 1) // 2 = 2; the same at 28 px, since the padding scales.
    assert data.center_crop_window(28, 28, 224, 32) == (2, 2, 24)
    assert data.center_crop_window(28, 28, 28, 32) == (2, 2, 24)
    assert [int(v) for v in data.center_crop_window(np.int32(28), np.int32(28), 28, 32)] == [2, 2, 24]


def test_eval_preprocessing_keeps_exactly_the_center():
    c = default.get_config().data
    c.mean, c.std, c.resize_method = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "nearest"
    image = np.full((28, 28, 3), 255, np.uint8)
    image[2:26, 2:26] = np.arange(24, dtype=np.uint8)[:, None, None]  # the 24x24 window of the case above
    out = data.preprocess_eval(image, c, 24).numpy()
    np.testing.assert_allclose(out, image[2:26, 2:26] / 255, atol=1e-6)


@needs_idx
@pytest.mark.slow
def test_concurrent_preparation(tmp_path):
    """Two processes preparing the same fresh data_dir both succeed and leave one intact copy."""
    code = (
        "import sys; from configs import default; from effscale import data; c = default.get_config().data; "
        "c.name = 'fashion_mnist'; c.data_dir = sys.argv[1]; print(data.dataset_info(c).train_examples)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [o.split()[-1] for o in outs] == ["55000", "55000"]  # 60,000 less the 5,000 held out
    labels = [
        ex["label"]
        for ex in tfds.as_numpy(fashion_mnist.FashionMnistIdx(data_dir=str(tmp_path)).as_dataset(split="test"))
    ]
    np.testing.assert_array_equal(labels, _idx("t10k-labels-idx1-ubyte.gz"))

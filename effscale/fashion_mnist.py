"""Fashion-MNIST served offline through TFDS from the IDX files of Debian's `dataset-fashion-mnist`.

TFDS's own `fashion_mnist` builder checks the download checksums, and the Debian files (the
original IDX files, re-gzipped) fail them. This builder reads the same IDX files from a manual
directory instead, so the rest of the pipeline treats Fashion-MNIST like any other TFDS dataset.

    builder = FashionMnistIdx(data_dir=None)  # TFDS' default data_dir
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir="/usr/share/datasets/fashion-mnist"))
    ds = builder.as_dataset(split="train")

effscale.data selects it for config.data.name = 'fashion_mnist' and prepares it once, under a lock.
The dataset has no validation split: effscale.data holds out the last 5,000 training images as one
(config.data.validation='auto'), so runs train on 55,000 and test on the 10,000 test images.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from effscale import storage

DEFAULT_MANUAL_DIR = "/usr/share/datasets/fashion-mnist"

# split -> (images file, labels file), as named in the original distribution.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
INSTRUCTIONS = (
    "Install the Debian package with `apt-get install dataset-fashion-mnist` (it puts the IDX files in "
    f"{DEFAULT_MANUAL_DIR}), or point config.data.manual_dir at a directory holding "
    + ", ".join(name for pair in FILES.values() for name in pair)
    + "."
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Decodes one gzipped IDX file (unsigned-byte data, local or gs://) into a numpy array of its declared shape."""
    data = gzip.decompress(storage.read_bytes(path))
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {data[:4].hex()}).")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def missing_files(manual_dir: str | os.PathLike) -> list[str]:
    """Names of the IDX files absent from `manual_dir` (local or gs://; empty when all are there)."""
    directory = storage.path(manual_dir, "config.data.manual_dir")
    return [name for pair in FILES.values() for name in pair if not (directory / name).is_file()]


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Xiao et al. 2017) from local IDX files: 60,000 train / 10,000 test, 28x28 grayscale."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Read from the IDX files of Debian's dataset-fashion-mnist."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Fashion-MNIST: Zalando article images, 10 classes, from local IDX files.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(28, 28, 1)),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the files' order, so that example i is record i of the IDX file (the pipeline shuffles).
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = dl_manager.manual_dir
        missing = missing_files(manual_dir)
        if missing:
            raise FileNotFoundError(f"Fashion-MNIST files {missing} not found in {manual_dir}. {INSTRUCTIONS}")
        return {
            split: self._generate_examples(manual_dir / img, manual_dir / lbl) for split, (img, lbl) in FILES.items()
        }

    def _generate_examples(self, images_path, labels_path) -> Iterator[tuple[int, dict]]:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels.")
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image[..., None], "label": int(label)}

"""Shared base for the project's local TFDS builders (no TensorFlow, no downloads).

Two workarounds for tensorflow-datasets 4.9.10 without TensorFlow:
  * images are yielded as PNG bytes encoded with PIL (TFDS would call `tf.image.encode_png` on arrays);
  * `code_path` is overridden: for a builder living inside a package, TFDS's version evaluates
    `isinstance(path, importlib_resources.abc.Traversable)`, which needs the `importlib_resources`
    backport that is not a dependency of this project. The file of the class is what TFDS wants anyway.
TFDS prints "Downloading and preparing dataset ..." and "... downloaded and prepared" to stdout around
a build; nothing is downloaded here, so those two messages are replaced by absl log lines saying so.
"""

from __future__ import annotations

import inspect
import io

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image


def png_bytes(image_HxWxC: np.ndarray) -> bytes:
    """PNG encoding with PIL of a uint8 (H, W, 1 or 3) image."""
    arr = np.asarray(image_HxWxC)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"image must be uint8 (H, W, 1|3); got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


class LocalGeneratorBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """GeneratorBasedBuilder whose data is generated or read locally; see the module docstring."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:
        """Path of the file defining the builder class."""
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None

    def _log_download_bytes(self) -> None:  # TFDS's "Downloading and preparing dataset ..." print
        logging.info("Building dataset %s locally from code (no download) into %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:  # TFDS's "... downloaded and prepared to ..." print
        logging.info("Built dataset %s in %s", self.name, self.data_dir)


def offline_download_config() -> tfds.download.DownloadConfig:
    """Download config that never reaches the network."""
    return tfds.download.DownloadConfig(try_download_gcs=False)

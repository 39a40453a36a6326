"""Test-session setup: 8 simulated CPU devices, a persistent compilation cache, submitit imported early,
slow tests first.

XLA_FLAGS must be set before jax is imported anywhere, so this runs at conftest import. The cache
directory is keyed by the device count so runs with different counts never share entries.
"""

import os

_DEVICE_COUNT = 8
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_DEVICE_COUNT}"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Datasets the tests build from experiment configs stay in the checkout (the package default is
# ~/tensorflow_datasets); tests that need their own directory set TFDS_DATA_DIR themselves.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(_REPO, ".cache", "tfds"))

import jax  # noqa: E402

# submitit configures logging when first imported (logging.config.dictConfig), which closes every existing
# handler; absl's closes its stream unless it is the current sys.stderr. Imported first inside a capsys
# test, that stream is pytest's capture file of the worker, and every later test there fails to capture.
import submitit  # noqa: E402, F401

from infotok_jax import compilation_cache  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
compilation_cache.enable(device_count=_DEVICE_COUNT)


def pytest_collection_modifyitems(config, items):
    """Tests marked slow run first (in file order): an idle xdist worker steals the tail of another's
    queue (`--dist worksteal`, setup.cfg), so short tests at the end keep every worker busy to the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

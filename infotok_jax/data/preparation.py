"""Idempotent, atomic preparation of registered datasets, and verified opening of prepared ones.

Layout: `<data_dir>/<builder name>/<config>/<version>/` holds TFDS's array_record shards and metadata,
`tokenizer.json` (the closed vocabulary) and, written last, `infotok_prepared.json` (the marker: dataset
name, content fingerprint, example counts, and every data file with its size).

Atomicity: the build runs in `<data_dir>/.incomplete-<name>-<pid>-<random>/`; the finished version
directory is renamed into place (one rename on the same filesystem), so a killed build never leaves a
directory that reads as complete. A complete dataset is never overwritten: preparing again with the same
settings is a no-op, with other settings an error. A final directory without a valid marker, or with a
data file missing or of the wrong size, is reported as corrupt with the command that fixes it.

`data_dir` is a local path (atomic renames, array_record random access): a gs:// data_dir raises
instead of being turned into a local folder; on a pod the bucket is mounted with gcsfuse.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from typing import Any

import tensorflow_datasets as tfds

from infotok_jax import storage
from infotok_jax.data import registry
from infotok_jax.data.builder_base import offline_download_config

MARKER = "infotok_prepared.json"
TOKENIZER_FILE = "tokenizer.json"
_INCOMPLETE = ".incomplete-"


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A verified prepared dataset: `path` is the TFDS version directory."""

    name: str
    path: str
    num_examples: dict[str, int]
    fingerprint: dict[str, Any]

    @property
    def tokenizer_path(self) -> str:
        """The closed-vocabulary JSON beside the data."""
        return os.path.join(self.path, TOKENIZER_FILE)


def local_data_dir(data_dir: str) -> str:
    """`data_dir` as an absolute local path; a URI such as gs://bucket/tfds raises ValueError."""
    if storage.is_remote(data_dir):
        raise ValueError(
            f"data_dir {data_dir} is a URI, but datasets are prepared and read in a local directory; mount "
            "the bucket with gcsfuse and pass the mount point (docs/training.md, Storage)"
        )
    return os.path.abspath(data_dir)


def dataset_path(name: str, data_dir: str, **builder_kwargs) -> str:
    """Final version directory of a registered dataset under `data_dir` (nothing is read or written)."""
    spec = registry.get_spec(name)
    registry.check_kwargs(name, builder_kwargs)
    # Built on a directory that does not exist, so TFDS reads nothing (a corrupt final dir stays ours to
    # diagnose); only the relative layout <builder>/<config>/<version> is taken from it.
    data_dir = local_data_dir(data_dir)
    probe = os.path.join(data_dir, f"{_INCOMPLETE}path-probe-{uuid.uuid4().hex[:8]}")
    builder = spec.make_builder(probe, **builder_kwargs)
    return os.path.join(data_dir, os.path.relpath(os.fspath(builder.data_dir), probe))


def _data_files(path: str) -> dict[str, int]:
    return {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path)) if f != MARKER}


def verify(path: str, name: str | None = None) -> dict[str, Any]:
    """Reads and checks the marker of a prepared directory; raises with what to do when missing/corrupt."""
    marker_path = os.path.join(path, MARKER)
    fix = f"delete {path} and run infotok_jax.data.prepare(...) again"
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"no prepared dataset at {path}; run infotok_jax.data.prepare("
            f"{name or '<name>'!r}, data_dir) first"
        )
    try:
        with open(marker_path) as f:
            marker = json.load(f)
    except FileNotFoundError:
        raise RuntimeError(f"{path} exists but is incomplete (no {MARKER}); {fix}") from None
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{marker_path} is corrupt ({e}); {fix}") from None
    if name is not None and marker.get("name") != name:
        raise RuntimeError(f"{path} holds dataset {marker.get('name')!r}, not {name!r}")
    for fname, size in marker.get("files", {}).items():
        fpath = os.path.join(path, fname)
        if not os.path.exists(fpath) or os.path.getsize(fpath) != size:
            raise RuntimeError(f"{path} is corrupt: {fname} is missing or has the wrong size; {fix}")
    return marker


def _as_prepared(path: str, marker: dict[str, Any]) -> PreparedDataset:
    return PreparedDataset(
        name=marker["name"],
        path=path,
        num_examples=dict(marker["num_examples"]),
        fingerprint=marker["fingerprint"],
    )


def open_prepared(name: str, data_dir: str, **builder_kwargs) -> PreparedDataset:
    """Opens a prepared registered dataset after verifying it matches `builder_kwargs`."""
    spec = registry.get_spec(name)
    path = dataset_path(name, data_dir, **builder_kwargs)
    marker = verify(path, name)
    want = json.loads(json.dumps(spec.fingerprint(**builder_kwargs)))
    if marker["fingerprint"] != want:
        raise RuntimeError(
            f"{path} was prepared with settings {marker['fingerprint']} but {want} were requested; "
            "use another data_dir for the new settings or pass the settings it was built with"
        )
    return _as_prepared(path, marker)


def check_usable(name: str, data_dir: str, **builder_kwargs) -> None:
    """Read-only check, before a run writes anything, that `prepare` and `open_prepared` will work.

    A prepared dataset must verify (a truncated or deleted data file is found here, not after the
    workdir was set up); an unprepared one is built under `data_dir` on first use, so `data_dir` must be
    a directory, or creatable, and writable. Raises ValueError naming `data_dir` and the fix.
    """
    data_dir = local_data_dir(data_dir)
    existing = data_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"data_dir {data_dir}: {existing} is a file, not a directory; point data_dir (or TFDS_DATA_DIR) "
            "at a directory"
        )
    path = dataset_path(name, data_dir, **builder_kwargs)
    if os.path.isdir(path):
        try:
            open_prepared(name, data_dir, **builder_kwargs)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"data_dir {data_dir}: {e}") from None
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"data_dir {data_dir}: {name} is not prepared there and {existing} is not writable, so it cannot "
            "be built there on first use; use a writable data_dir (or TFDS_DATA_DIR), or prepare it there "
            "with write access first"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_builds(data_dir: str, name: str) -> None:
    """Deletes temp dirs of earlier builds of `name` whose process is gone (same host)."""
    prefix = f"{_INCOMPLETE}{name}-"
    for entry in os.listdir(data_dir):
        if entry.startswith(prefix):
            pid = entry[len(prefix) :].split("-")[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(os.path.join(data_dir, entry), ignore_errors=True)


def prepare(name: str, data_dir: str, **builder_kwargs) -> PreparedDataset:
    """Builds a registered dataset under `data_dir` unless it is already complete; returns it verified.

    Idempotent: a complete dataset with the same settings is returned as is; one with other settings, or
    an incomplete/corrupt directory in the way, raises with what to do. Never downloads anything.
    """
    tfds.disable_progress_bar()
    spec = registry.get_spec(name)
    data_dir = local_data_dir(data_dir)
    final = dataset_path(name, data_dir, **builder_kwargs)
    if os.path.exists(final):
        return open_prepared(name, data_dir, **builder_kwargs)
    os.makedirs(data_dir, exist_ok=True)
    _remove_stale_builds(data_dir, name)
    tmp_root = os.path.join(data_dir, f"{_INCOMPLETE}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        builder = spec.make_builder(tmp_root, **builder_kwargs)
        builder.download_and_prepare(download_config=offline_download_config())
        tmp_version = os.fspath(builder.data_dir)
        spec.make_tokenizer().save(os.path.join(tmp_version, TOKENIZER_FILE))
        marker = {
            "name": name,
            "fingerprint": spec.fingerprint(**builder_kwargs),
            "num_examples": {k: int(v.num_examples) for k, v in builder.info.splits.items()},
            "files": _data_files(tmp_version),
        }
        with open(os.path.join(tmp_version, MARKER), "w") as f:
            json.dump(marker, f, indent=1, sort_keys=True)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.rename(tmp_version, final)
        except OSError:
            if not os.path.exists(final):  # not a lost race with a concurrent identical build
                raise
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return open_prepared(name, data_dir, **builder_kwargs)

"""Local and gs:// paths in one place: what differs between a disk and a bucket, and nothing else.

The workdir (checkpoints, metrics, TensorBoard events, images, config) may be a local directory or
`gs://bucket/path`; every module writes through `etils.epath`, which sends gs:// to gcsfs (installed by
the `gcs` extra: `pip install 'infotok-jax[gcs]'`). Two things differ on a bucket:

- Renames are copies, and there are no partial objects: an upload becomes visible whole or not at all.
  So `write_text_atomic` writes through a temporary file and a rename on disk, and uploads directly to
  a bucket.
- Create-if-absent is `O_CREAT | O_EXCL` on disk and an upload with the precondition "no live
  generation" (`ifGenerationMatch=0`, fsspec's `mode="create"`) on a bucket: `create_exclusive`.
- Relative paths exist only on disk: orbax needs absolute local paths, and a gs:// path must never go
  through `os.path.abspath` or `pathlib` (which turn `gs://b/run` into a local `./gs:/b/run`).
"""

from __future__ import annotations

import errno
import importlib.util
import os
import tempfile

from etils import epath

GCS_INSTALL_HINT = "pip install 'infotok-jax[gcs]' (or -e '.[gcs]' in a checkout)"


def is_remote(path: epath.PathLike) -> bool:
    """True for URIs such as gs://bucket/x (anything with a scheme), False for local paths."""
    return "://" in os.fspath(path)


def as_path(path: epath.PathLike) -> epath.Path:
    """`path` as an epath.Path; a local relative path becomes absolute, a URI is kept as it is."""
    p = epath.Path(path)
    return p if is_remote(path) else p.absolute()


def quiet_gcs_emulator_probe(environ: dict[str, str] | None = None) -> None:
    """Against a GCS emulator (STORAGE_EMULATOR_HOST set), turns gcsfs's bucket-type probe off.

    gcsfs asks Google's storage-control API, which no emulator serves, what kind of bucket each path is
    in; without Google credentials every call then logs a warning ("Could not determine bucket type ...
    Your default credentials were not found", 340 of 439 log lines in one emulated run) and falls back to
    the plain client, which is what serves the emulator. gcsfs reads the switch when it is imported, so
    the binaries call this first (`binary_setup.start`); an explicit GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT
    wins.
    """
    env = os.environ if environ is None else environ
    if env.get("STORAGE_EMULATOR_HOST"):
        env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def missing_remote_support(path: epath.PathLike) -> str | None:
    """For a gs:// path without gcsfs installed: what to install; else None."""
    if os.fspath(path).startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
        return f"writing to gs:// needs gcsfs, which is not installed; {GCS_INSTALL_HINT}"
    return None


def write_text_atomic(path: epath.PathLike, text: str) -> None:
    """Writes `text` so that a reader sees the old content or the new, never a cut file.

    On disk: a temporary file in the same directory, then a rename. On a bucket: one upload (objects
    appear whole).
    """
    if is_remote(path):
        epath.Path(path).write_text(text)
        return
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(os.path.abspath(path)), prefix=os.path.basename(path) + ".tmp"
    )
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_exclusive(path: epath.PathLike, text: str) -> bool:
    """Creates `path` holding `text` only if it does not exist; returns whether this call created it.

    Atomic against concurrent creators on disk and on gs:// (the bucket refuses the second upload); on
    other fsspec filesystems it is as good as their `pipe_file(mode="create")`.
    """
    if is_remote(path):
        import fsspec  # installed with gcsfs (the `gcs` extra), as every remote path needs

        uri = os.fspath(path)
        try:
            fsspec.filesystem(uri.split("://", 1)[0]).pipe_file(uri, text.encode(), mode="create")
        except FileExistsError:
            return False
        return True
    try:
        fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def move_tree(source: epath.PathLike, target: epath.PathLike) -> None:
    """Moves the directory `source` to `target` (which must not exist), creating its parents.

    On disk one rename. A bucket has no folders: `mkdir` creates nothing and a rename needs its
    destination folder to exist, so each object is copied server-side under the new prefix, then the
    source objects are deleted.
    """
    if not is_remote(source):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        os.rename(source, target)
        return
    import fsspec  # installed with gcsfs (the `gcs` extra), as every remote path needs

    uri = os.fspath(source)
    fs = fsspec.filesystem(uri.split("://", 1)[0])
    source_key = fs._strip_protocol(uri).rstrip("/")
    target_key = fs._strip_protocol(os.fspath(target)).rstrip("/")
    for key in fs.find(source_key):
        fs.copy(key, target_key + key[len(source_key) :])  # server-side
    # deleted through epath's own gcsfs instance, so that its cached listings (which orbax reads) forget
    # the source
    epath.Path(source).rmtree()


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is ENOSPC (orbax and tensorstore re-raise it
    under other types, keeping the text)."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False

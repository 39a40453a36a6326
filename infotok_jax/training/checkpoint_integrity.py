"""Checksums of committed checkpoint steps, so that corruption is found before a restore, not after.

orbax guarantees that a step directory appears only once it is complete, but not that its files stay
intact afterwards (a truncated manifest, a deleted `_METADATA`, flipped bits in an array file). Once a
step's files are written, and before orbax commits the step, process 0 hashes every file under it with
sha256 and writes the digests to `<step>/CHECKSUMS_FILE` (atomically). Before a restore, `verify`
recomputes them: a missing, changed or truncated file names the step as unusable, and the caller falls
back to an older step.

A step without a checksum file cannot be verified (written before checksums existed, by a synchronous
save killed before its hashing, or the file was deleted): `verify` returns NO_CHECKSUMS and the caller
refuses the step. `python -m infotok_jax.training.checkpoint_integrity STEP_DIR` writes the checksums of
a step that the user trusts. Hashing reads the whole checkpoint back once per save and once per restore,
which on a bucket means downloading it.
"""

from __future__ import annotations

import hashlib
import json

from etils import epath

from infotok_jax import storage

CHECKSUMS_FILE = "checksums_sha256.json"
NO_CHECKSUMS = f"no checksum file ({CHECKSUMS_FILE})"
_CHUNK = 1 << 22
# Top-level files that orbax (re)writes when it commits the step, after the hashing: the step metadata
# (commit time; the items restore without it) and, on a bucket, the commit marker.
_WRITTEN_AT_COMMIT = frozenset({CHECKSUMS_FILE, "_CHECKPOINT_METADATA", "commit_success.txt"})


def _files(step_dir: epath.Path) -> list[str]:
    """Relative paths of the regular files under `step_dir`, sorted, without those written at commit."""
    names, pending = [], [step_dir]
    while pending:  # epath's gs:// backend has no recursive glob
        for path in pending.pop().iterdir():
            if path.is_dir():
                pending.append(path)
            elif path.name not in _WRITTEN_AT_COMMIT or path.parent != step_dir:
                names.append(path.relative_to(step_dir).as_posix())
    return sorted(names)


def _sha256(path: epath.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(step_dir: epath.PathLike) -> None:
    """Records the sha256 of every file of a committed step in `<step_dir>/CHECKSUMS_FILE`."""
    step_dir = epath.Path(step_dir)
    digests = {name: _sha256(step_dir / name) for name in _files(step_dir)}
    record = {"algorithm": "sha256", "files": digests}
    storage.write_text_atomic(step_dir / CHECKSUMS_FILE, json.dumps(record, indent=1, sort_keys=True))


def has_checksums(step_dir: epath.PathLike) -> bool:
    return (epath.Path(step_dir) / CHECKSUMS_FILE).exists()


def verify(step_dir: epath.PathLike) -> str | None:
    """None when every recorded file of the step is present and unchanged, else what is wrong.

    A step without a checksum file returns NO_CHECKSUMS (unverifiable).
    """
    step_dir = epath.Path(step_dir)
    if not step_dir.is_dir():
        return f"{step_dir} is not a directory"
    record_path = step_dir / CHECKSUMS_FILE
    if not record_path.exists():
        return NO_CHECKSUMS
    try:
        expected = json.loads(record_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable {CHECKSUMS_FILE} ({type(e).__name__}: {e})"
    # records written before the hashing moved ahead of the commit also list the files written at commit
    expected = {name: digest for name, digest in expected.items() if name not in _WRITTEN_AT_COMMIT}
    present = set(_files(step_dir))
    missing = sorted(set(expected) - present)
    if missing:
        return f"{len(missing)} file(s) missing, e.g. {missing[0]}"
    changed = [name for name in sorted(expected) if _sha256(step_dir / name) != expected[name]]
    if changed:
        return f"{len(changed)} file(s) changed since the save (sha256 mismatch), e.g. {changed[0]}"
    return None


def main(argv: list[str]) -> None:
    """`python -m infotok_jax.training.checkpoint_integrity STEP_DIR...`: vouches for steps without
    checksums (written before checksums existed) by hashing their files as they are now."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m infotok_jax.training.checkpoint_integrity CHECKPOINTS/STEP ...")
    for step_dir in argv[1:]:
        write_checksums(step_dir)
        print(f"wrote {epath.Path(step_dir) / CHECKSUMS_FILE}")


if __name__ == "__main__":
    import sys

    main(sys.argv)

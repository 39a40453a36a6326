"""Which committed results may count toward a claim: a result made from a checkout with uncommitted changes
(`git.dirty`) counts only when its patch is stored beside it (`<run>.patch`, `git diff HEAD` at the time
of the run) and touches no code that shapes training, the model, the data or the evaluation; otherwise
it is excluded from the claims and listed for a re-run.

`CODE_PATHS` are the paths whose changes could change a run's numbers: the package (except the study's
own aggregation and tables under `infotok_jax/study/`, which read results and train nothing), the
experiment configs and the dependency pins. Documentation, tests and other result files do not.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

CODE_PATHS = ("infotok_jax/", "experiments/configs/", "pyproject.toml", "constraints.txt")
NOT_CODE_PATHS = ("infotok_jax/study/",)
PATCH_SUFFIX = ".patch"


def patch_path(result_file: pathlib.Path) -> pathlib.Path:
    """Where the patch of a dirty result is stored: beside it, `<run>.patch`."""
    result_file = pathlib.Path(result_file)
    return result_file.with_name(result_file.stem + PATCH_SUFFIX)


def working_tree_patch(repo: pathlib.Path) -> str:
    """`git diff HEAD` of `repo` (tracked files; "" when clean or not a git checkout)."""
    done = subprocess.run(["git", "diff", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def touched_paths(patch: str) -> list[str]:
    """The repository paths a unified git diff changes (both sides of a rename)."""
    paths: list[str] = []
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            a, _, b = line.removeprefix("diff --git ").partition(" b/")
            for path in (a.removeprefix("a/"), b):
                if path and path not in paths:
                    paths.append(path)
    return paths


def is_code(path: str) -> bool:
    """Whether a change to `path` could change a run's numbers (`CODE_PATHS`, minus `NOT_CODE_PATHS`)."""
    if any(path.startswith(p) for p in NOT_CODE_PATHS):
        return False
    return any(path == p or path.startswith(p) for p in CODE_PATHS)


def eligibility(result: dict[str, Any], result_file: pathlib.Path) -> tuple[bool, str]:
    """(counts toward claims, why): clean; dirty with a stored patch that touches no code; or excluded
    (dirty without a stored patch, or its patch touches code paths, named)."""
    if not (result.get("git") or {}).get("dirty"):
        return True, "clean checkout"
    patch_file = patch_path(result_file)
    if not patch_file.exists():
        return False, "dirty checkout, no patch stored beside it"
    code = [p for p in touched_paths(patch_file.read_text()) if is_code(p)]
    if code:
        return False, f"dirty checkout, its patch changes code: {', '.join(code)}"
    return True, "dirty checkout, patch stored, no code changed"

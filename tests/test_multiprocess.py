"""Every real task as 2 processes x 2 devices equals 1 process x 4 devices, through kill -9 and resume.

Each task (the tokenizer and the three hosts) trains through `launch/local_multiprocess.py` as 2
processes. The tokenizer also loses a process to SIGKILL after the first in-training evaluation (the
launcher then stops the other), resumes from the last checkpoint and finishes. Training
losses and in-training evaluation metrics must equal those of one uninterrupted process with 4 devices up
to float tolerance (`RTOL`): the two runs execute the same partitioned programs, and only the
cross-process all-reduce order may differ. So must every in-training picture, pixel for pixel up to
rounding: for a host, images sampled from fixed captions by the host's own sampler (`hosts.generate`,
the evaluation binary's sampler too). The evaluation binary is scored as 2 processes on the AR host: its
multi-process part (sharded batches, gathering, process 0 writing) and its answering (`HostBase.answer`,
one implementation over each host's backbone) are the same for every host, and the host-specific
sampling is compared through the pictures.

A lost process must not hang the others: with `--heartbeat_timeout_seconds`, the survivor exits non-zero
naming the lost task, and a restart resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import matplotlib.image
import portpicker
import pytest

from tests import training_harness as harness

pytestmark = pytest.mark.slow

RTOL, ATOL = 1e-4, 1e-6  # float32 all-reduce order: observed differences are ~1e-7 relative
LAUNCHER = [sys.executable, str(harness.REPO / "launch" / "local_multiprocess.py")]

# (config file, config arguments, steps, evaluation period, killed and resumed, scored by the evaluation
# binary); a --config.num_train_steps override lengthens the tiny runs so that a kill after the first
# evaluation lands before the end. Resuming is task-independent (the trainer restores the state and the
# position of the data pipeline every task shares, tasks/base.py), so the kill is exercised on the
# tokenizer; every task still checks 2 processes == 1 process for training and its pictures.
TASKS = {
    "tokenizer": (harness.TOKENIZER_CONFIG, "tiny,arm=hsic", 9, 3, True, False),
    "ar": (harness.HOST_CONFIG, "tiny,host=ar,arm=hsic", 8, 2, False, True),
    "masked": (harness.HOST_CONFIG, "tiny,host=masked,arm=hsic", 8, 2, False, False),
    "continuous": (harness.HOST_CONFIG, "tiny,host=continuous,arm=vib", 8, 2, False, False),
}
PIXEL_ATOL = 2.5 / 255  # PNG rounding of float32 pixels that differ by all-reduce order


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    return {"TFDS_DATA_DIR": str(tmp_path_factory.mktemp("tfds"))}


def _binary(module: str, config, config_args: str, workdir, steps: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        module,
        f"--config={config}:{config_args}",
        f"--workdir={workdir}",
        f"--config.num_train_steps={steps}",
    ]


def _launch(command: list[str], env: dict[str, str], **popen_kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *LAUNCHER,
            "--num_processes=2",
            "--devices_per_process=2",
            "--timeout=600",
            "--",
            *command,
            "--distributed",
        ],
        env={**harness.env_for(2), **env},
        cwd=harness.REPO,
        text=True,
        **popen_kwargs,
    )


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _wait_for_eval(workdir, process: subprocess.Popen, step: int, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = harness.reporting.read_metrics(workdir)
        if any(k.startswith("eval/") for k in records.get(step, {})):
            return
        assert process.poll() is None, f"training exited early ({process.returncode})"
        time.sleep(0.02)
    raise AssertionError(f"no evaluation at step {step} within {timeout} s")


def _assert_close(observed: dict, expected: dict, what: str) -> None:
    assert sorted(observed) == sorted(expected), what
    for key, want in expected.items():
        got = observed[key]
        if want is None or got is None:
            assert got == want, f"{what}: {key}"
        else:
            assert got == pytest.approx(want, rel=RTOL, abs=ATOL), f"{what}: {key}"


def _check_single_run(workdir, steps: int, eval_every: int, is_host: bool) -> None:
    """What every task's run writes: checkpoints, its metrics, pictures, config and timing."""
    assert harness.checkpoint_steps(workdir)[-1] == steps
    metrics = harness.reporting.read_metrics(workdir)
    if is_host:
        keys = ("loss", "loss/understanding", "loss/generation", "eval/psnr", "eval/nhsic_xz")
        pictures = [f"generations_step{steps:06d}.png"]
    else:
        keys = (
            "loss",
            "reconstruction_mse",
            "infotok/compression",
            "tokenizer/codebook_perplexity",
            "eval/psnr",
            "eval/codebook_usage",
            "eval/nhsic_xz",
            "eval/nhsic_zt",
            "eval/rate_bits_per_token",
        )
        pictures = [f"reconstructions_step{steps:06d}.png"]
    for key in keys:
        assert key in metrics[steps], key
    assert 0.0 <= metrics[steps]["eval/nhsic_xz"] <= 1.0
    assert all(
        any(k.startswith("eval/") for k in metrics[s]) for s in range(eval_every, steps + 1, eval_every)
    )
    for name in [*pictures, "information_plane.png"]:
        assert (workdir / "images" / name).stat().st_size > 0, name
    timing = json.loads((workdir / "timing.json").read_text())
    assert timing["sessions"] == 1 and timing["compile_s"] > 0 and timing["train_s"] > 0


@pytest.mark.parametrize("task", sorted(TASKS))
def test_two_processes_through_kill_and_resume_equal_one_process(tmp_path, data_env, task):
    config, config_args, steps, eval_every, kill, evaluate = TASKS[task]
    is_host = config == harness.HOST_CONFIG
    single, multi = tmp_path / "single", tmp_path / "multi"

    reference = subprocess.run(
        _binary("infotok_jax.train", config, config_args, single, steps),
        env={**harness.env_for(4), **data_env},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=harness.REPO,
    )
    assert reference.returncode == 0, reference.stderr[-4000:]
    _check_single_run(single, steps, eval_every, is_host)

    if kill:
        first = _launch(
            _binary("infotok_jax.train", config, config_args, multi, steps),
            data_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_eval(multi, first, eval_every)
        os.kill(_children(first.pid)[1], signal.SIGKILL)
        assert first.wait(timeout=120) != 0
        interrupted_at = max(harness.checkpoint_steps(multi))
        assert interrupted_at < steps, "the run finished before the kill; the test did not interrupt it"

    final = _launch(
        _binary("infotok_jax.train", config, config_args, multi, steps),
        data_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = final.communicate(timeout=600)[0]
    assert final.returncode == 0, output[-4000:]
    if kill:
        assert f"at step {interrupted_at}" in output  # "Resumed from <dir> at step N"
    assert max(harness.checkpoint_steps(multi)) == steps

    expected, observed = harness.reporting.read_metrics(single), harness.reporting.read_metrics(multi)
    assert sorted(observed) == sorted(expected) == list(range(1, steps + 1))
    for step in expected:
        keep = {k: v for k, v in expected[step].items() if not k.startswith("steps_per_sec")}  # wall clock
        _assert_close({k: observed[step].get(k) for k in keep}, keep, f"step {step}")
    assert (multi / "timing.json").exists() and (multi / "images" / "information_plane.png").exists()
    pictures = sorted(
        p.name for p in (single / "images").glob(f"{'generations' if is_host else 'reconstructions'}_step*")
    )
    assert len(pictures) == steps // eval_every, pictures
    for picture in pictures:
        pixels = {run: matplotlib.image.imread(run / "images" / picture) for run in (single, multi)}
        assert pixels[multi].shape == pixels[single].shape
        worst = float(abs(pixels[multi] - pixels[single]).max())
        assert worst <= PIXEL_ATOL, f"{picture}: pixels differ by up to {worst * 255:.0f} of 255"
    if not evaluate:
        return

    scores = {}
    for name, workdir, runner in (("single", single, "single"), ("multi", multi, "multi")):
        command = _binary("infotok_jax.evaluate", config, config_args, workdir, steps)
        if runner == "single":
            result = subprocess.run(
                command,
                env={**harness.env_for(4), **data_env},
                capture_output=True,
                text=True,
                timeout=600,
                cwd=harness.REPO,
            )
            out = result.stdout + result.stderr
        else:
            process = _launch(command, data_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = process.communicate(timeout=600)[0]
            result = process
        assert result.returncode == 0, out[-4000:]
        scores[name] = json.loads((workdir / "eval" / f"step_{steps:06d}" / "metrics.json").read_text())
        history = harness.reporting.read_metrics(workdir / "eval")  # process 0 alone appended it
        assert list(history) == [steps] and set(history[steps]) == set(scores[name])
        finite = {k: v for k, v in scores[name].items() if v is not None}  # metrics.json: NaN as null
        assert {k: history[steps][k] for k in finite} == pytest.approx(finite)
        assert len(list((workdir / "eval" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    for split in ("validation", "test", "holdout"):
        assert scores["single"][f"{split}/understanding/num_examples"] == 8
        assert 0.0 <= scores["single"][f"{split}/understanding/accuracy"] <= 1.0
        assert scores["single"][f"{split}/generation/num_prompts"] == 8
        assert 0.0 <= scores["single"][f"{split}/generation/all_correct"] <= 1.0
        assert scores["single"][f"{split}/reconstruction/psnr"] > 0
        assert (single / "eval" / f"step_{steps:06d}" / f"{split}_generation.png").exists()
    _assert_close(scores["multi"], scores["single"], "evaluation binary")


_LOST_TASK_MESSAGE = (
    "stopped sending heartbeats|heartbeat timeout|has disconnected|tasks have crashed"
    "|distributed service detected fatal errors"
)


def test_lost_process_stops_the_survivor_and_a_restart_resumes(tmp_path):
    """kill -9 of one of two processes started without the launcher (as on a pod): the coordination
    service stops the survivor (non-zero exit) within the heartbeat timeout; both restarted resume from
    a checkpoint."""
    heartbeat = 10
    workdir = tmp_path / "run"

    def start(process_id: int, port: int, **popen_kwargs) -> subprocess.Popen:
        env = {
            **harness.env_for(2),
            "INFOTOK_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "INFOTOK_NUM_PROCESSES": "2",
            "INFOTOK_PROCESS_ID": str(process_id),
        }
        command = [
            *harness.train_command(workdir, "steps=60,ckpt=5,delay=0.1,mesh=4.1.1"),
            "--distributed",
            f"--heartbeat_timeout_seconds={heartbeat}",
        ]
        return subprocess.Popen(command, env=env, cwd=harness.REPO, text=True, **popen_kwargs)

    port = portpicker.pick_unused_port()
    survivor = start(0, port, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    victim = start(1, port, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness.wait_for_step(workdir, survivor, 12)
    victim.kill()
    killed_at = time.monotonic()
    stderr = survivor.communicate(timeout=heartbeat + 90)[1]
    assert survivor.returncode != 0
    assert time.monotonic() - killed_at < heartbeat + 60
    # The coordination service's words depend on which side notices first (its heartbeat check, the
    # survivor's agent, or the victim's closed connection).
    report = "\n".join(line for line in stderr.splitlines() if not line.startswith(("  File", "    @")))
    assert re.search(_LOST_TASK_MESSAGE, stderr), report[-4000:]
    last = max(harness.checkpoint_steps(workdir))
    assert 5 <= last < 60

    port = portpicker.pick_unused_port()
    restarted = [start(i, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in restarted]
    assert [p.returncode for p in restarted] == [0, 0], outputs[0][-3000:]
    assert f"at step {last}" in outputs[0]
    assert max(harness.checkpoint_steps(workdir)) == 60

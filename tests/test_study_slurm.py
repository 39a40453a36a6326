"""The study on a real single-node SLURM (Debian's slurm-wlm and munge, daemons started by the fixture):
a slice runs as one job array to completion, and a job cancelled mid-run is resubmitted and resumes from
its checkpoint. Recipe: shared/design/slurm-single-node.md in the project notes, launch/README.md."""

import dataclasses
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time

import portpicker
import pytest

from infotok_jax.study import engine, protocol

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
STEPS = 24  # tiny models: a few seconds of training after compilation, a checkpoint every 2 steps


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (f"{d}/{name}" for d in ("/usr/sbin", "/sbin") if os.access(f"{d}/{name}", os.X_OK)), None
    )


def _slurm_conf(folder: pathlib.Path, socket_path: pathlib.Path) -> str:
    host = socket.gethostname().split(".")[0]
    memory_mib = int(pathlib.Path("/proc/meminfo").read_text().split()[1]) // 1024 * 9 // 10
    return "\n".join(
        [
            f"ClusterName=infotok{secrets.token_hex(3)}",
            f"SlurmctldHost={host}(127.0.0.1)",
            "AuthType=auth/munge",
            f"AuthInfo=socket={socket_path}",
            "CredType=cred/munge",
            "SlurmUser=root",
            f"SlurmctldPort={portpicker.pick_unused_port()}",
            f"SlurmdPort={portpicker.pick_unused_port()}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "ReturnToService=2",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mib} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _stop(pid_file: pathlib.Path) -> None:
    """SIGTERM to the daemon of `pid_file`, SIGKILL if it is still there 10 s later."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 2.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@pytest.fixture
def slurm(tmp_path_factory, monkeypatch):
    """A running single-node cluster (munged, slurmctld, slurmd on 127.0.0.1); SLURM_CONF points at it."""
    missing = [name for name in DAEMONS if _binary(name) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM runs its daemons as root (SlurmUser=root)")
    folder = pathlib.Path(tmp_path_factory.mktemp("slurm"))
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir()
    key = folder / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    munge = folder / "munge"
    subprocess.run(
        [_binary("munged"), f"--key-file={key}", f"--socket={munge / 'munge.socket'}", "-f",
         f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}",
         f"--seed-file={munge / 'seed'}"],
        check=True,
    )  # fmt: skip
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, munge / "munge.socket"))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    try:
        subprocess.run([_binary("slurmctld"), "-f", str(conf)], check=True)
        subprocess.run([_binary("slurmd"), "-f", str(conf)], check=True)
        deadline = time.monotonic() + 60
        while (
            "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
        ):
            assert time.monotonic() < deadline, (folder / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield folder
    finally:
        subprocess.run(["scancel", "--user=root"], capture_output=True)
        for pid_file in (folder / "slurmd.pid", folder / "slurmctld.pid", munge / "munged.pid"):
            _stop(pid_file)


def _cancel_after_first_checkpoint(workdir: pathlib.Path, seen: dict) -> None:
    """Waits for the run's first checkpoint, then `scancel`s the job training it (named in train.log)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
        log = (workdir / "train.log").read_text() if (workdir / "train.log").exists() else ""
        jobs = re.findall(r"^# job (\S+) on ", log, re.M)
        if steps and jobs and max(steps) < STEPS:
            seen.update(job=jobs[-1], step=max(steps))
            subprocess.run(["scancel", jobs[-1]], check=True)
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_a_slice_runs_as_a_slurm_array_and_a_cancelled_job_resumes_from_its_checkpoint(
    slurm, tmp_path, monkeypatch
):
    monkeypatch.setenv("XLA_FLAGS", "")  # the jobs inherit this environment: one CPU device each
    runs = [
        dataclasses.replace(r, overrides=(f"--config.num_train_steps={STEPS}",), steps=STEPS)
        for r in protocol.plan("main", ["ar"], ["none"], [0, 1], steps=2, extra="tiny")
    ]
    root, store = tmp_path / "root", tmp_path / "results"
    seen: dict = {}
    killer = threading.Thread(target=_cancel_after_first_checkpoint, args=(runs[0].workdir(root), seen))
    killer.start()
    said: list[str] = []
    start = time.monotonic()

    def say(line: str) -> None:
        said.append(line)
        print(f"{time.monotonic() - start:6.1f} s  {line}")  # the timeline, shown when the test fails

    options = engine.EngineOptions(engine="slurm", parallel=2, cpus_per_task=1, retries=1, timeout_min=10)
    outcomes = engine.execute(runs, root, study="slurm", results_dir=store, options=options, say=say)
    killer.join()
    log = "\n".join(said)
    assert outcomes == {"ar-none-s0": "done", "ar-none-s1": "done"}, log
    assert (store / "slurm" / "ar-none-s0.json").exists() and (store / "slurm" / "ar-none-s1.json").exists()

    # both runs went in as one array: tasks <array id>_0 and _1
    assert "submitted 2 job(s) to slurm: ar-none-s0, ar-none-s1" in log
    first_jobs = [
        re.findall(r"^# job (\S+) on ", (r.workdir(root) / "train.log").read_text(), re.M)[0] for r in runs
    ]
    assert [j.split("_")[1] for j in first_jobs] == ["0", "1"] and len(
        {j.split("_")[0] for j in first_jobs}
    ) == 1

    # the cancelled job was resubmitted, and its training resumed from a checkpoint at or after the one seen
    train_log = (runs[0].workdir(root) / "train.log").read_text()
    jobs = re.findall(r"^# job (\S+) on ", train_log, re.M)
    assert seen and jobs[0] == seen["job"] and len(jobs) == 2 and jobs[1] != jobs[0], (seen, jobs)
    assert re.search(
        rf"ar-none-s0: failed: .* \(job {re.escape(seen['job'])}, attempt 1\); resubmitting", log
    )
    resumed = [int(s) for s in re.findall(r"Resumed from \S+ at step (\d+)", train_log)]
    assert len(resumed) == 1 and seen["step"] <= resumed[0] < STEPS, (resumed, seen)
    assert f"Training steps {resumed[0] + 1}..{STEPS} of {STEPS}" in train_log
    untouched = (runs[1].workdir(root) / "train.log").read_text()
    assert "Resumed from" not in untouched and len(re.findall(r"^# job ", untouched, re.M)) == 1


def test_engine_flags_parse_and_a_malformed_one_exits_2(capsys):
    """`run_study.py --engine=slurm` takes its resources as flags; a malformed one is a user error."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "run_study", pathlib.Path(__file__).parents[1] / "experiments" / "run_study.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.parse_args(
        ["--engine=slurm", "--slurm_partition=gpu", "--gpus_per_node=1", "--slurm_extra=qos=low,mem=16G"]
    )
    options = engine.options_from_flags(args)
    assert options.slurm_extra == (("qos", "low"), ("mem", "16G")) and options.slots(5) == 5
    assert cli.main(["--slurm_extra=nokey", "--dry_run"]) == 2
    assert "key=value" in capsys.readouterr().err

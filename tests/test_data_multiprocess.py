"""Real 2-process run (jax.distributed on 127.0.0.1, 2 CPU devices each): the global batches the hosts
assemble are exactly the single-process batches."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import portpicker

from infotok_jax import data

KW = dict(nuisance=1.0, num_train=40, num_validation=4, num_test=4, num_holdout=4)

WORKER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import jax
    from jax.experimental import multihost_utils
    pid, port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=60)
    from infotok_jax import data, sharding
    kw = dict(nuisance=1.0, num_train=40, num_validation=4, num_test=4, num_holdout=4)
    mesh = sharding.make_mesh((-1, 1, 1))
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    pipe = data.make_pipeline("scenes32", data_dir, "train", 8, mesh, seed=11, dataset_kwargs=kw)
    assert pipe.local_batch_size == 4
    got = {}
    for step in range(3):
        batch = next(pipe)
        for key in ("example_id", "image", "caption_tokens", "question_tokens"):
            got[f"{key}_{step}"] = np.asarray(multihost_utils.process_allgather(batch[key], tiled=True))
    if pid == 0:
        np.savez(out, **got)
    multihost_utils.sync_global_devices("done")
""")


def test_two_real_processes_assemble_the_single_process_batches(tmp_path):
    data_dir = str(tmp_path / "d")
    data.prepare("scenes32", data_dir, **KW)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = str(tmp_path / "out.npz")
    port = str(portpicker.pick_unused_port())
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(p), port, data_dir, out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for p in (0, 1)
    ]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    got = np.load(out)
    ref = data.make_pipeline(
        "scenes32", data_dir, "train", 8, None, seed=11, dataset_kwargs=KW, process_index=0, process_count=1
    )
    for step in range(3):
        want = next(ref)
        for key in ("example_id", "image", "caption_tokens", "question_tokens"):
            np.testing.assert_array_equal(got[f"{key}_{step}"], want[key])

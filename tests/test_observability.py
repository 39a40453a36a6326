"""What a user sees while a run goes: the absl log, the windowed steps/s, TensorBoard, labelled grids.

One tiny in-process training of the toy task (module-scoped, ~10 s) is read three ways: the captured
absl log, `metrics.jsonl` and the TensorBoard event files through TensorBoard's own EventAccumulator
(not tensorboardX, which wrote them).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging as std_logging
import pathlib
import re
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
import pytest
from absl import logging
from PIL import Image

from infotok_jax.evaluate import grids
from infotok_jax.study import aggregate, tables
from infotok_jax.training import plots, reporting, run_log, timing, trainer
from tests import toy_task
from tests.configs import toy_regression

REPO = pathlib.Path(__file__).resolve().parent.parent


class _PictureToyTask(toy_task.ToyRegressionTask):
    """The toy task with a 'generations' grid and captions, like the host task's."""

    def visualize(self, variables, batch):
        x = jnp.clip(batch["x"][:4, :3] * 0.2 + 0.5, 0.0, 1.0)
        images = jnp.broadcast_to(x[:, None, None, :], (4, 4, 4, 3))
        return {
            "generations": jnp.stack([images, 1.0 - images]),
            "generations.caption_tokens": jnp.ones((4, 3)),
        }

    def picture_captions(self, name, rows_RxBxHxWx3, annotations):
        assert name == "generations" and rows_RxBxHxWx3.shape == (2, 4, 4, 4, 3)
        tokens = annotations["caption_tokens"]
        return [f"a long caption number {i} with several words" for i in range(len(tokens))]


class _Capture(std_logging.Handler):
    def __init__(self):
        super().__init__(level=std_logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _absl_lines() -> Iterator[list[str]]:
    """The messages absl logs at INFO and above inside the block."""
    capture = _Capture()
    absl_logger = logging.get_absl_logger()
    old_level = absl_logger.level
    absl_logger.addHandler(capture)
    absl_logger.setLevel(std_logging.INFO)
    try:
        yield capture.lines
    finally:
        absl_logger.removeHandler(capture)
        absl_logger.setLevel(old_level)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """(workdir, log text) of a 6-step toy training with evaluations at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("obs") / "run"
    config = toy_regression.get_config("steps=6,eval=3,ckpt=3")
    config.log_every_steps = 2
    with _absl_lines() as lines:
        trainer.train_and_evaluate(config, _PictureToyTask(config), workdir)
    return workdir, "\n".join(lines)


def test_log_shows_params_paths_compile_losses_and_eval(toy_run):
    workdir, log = toy_run
    # the toy MLP: Dense(8->32) + Dense(32->1) = 8*32+32 + 32+1 = 321
    assert "Parameters: 321 total (Dense_0 288, Dense_1 33)" in log, log
    for path in ("checkpoints", "metrics.jsonl", "tensorboard", "images"):
        assert str(workdir / path) in log, path
    assert "Compiling the train step" in log
    assert "Compiled the train step and ran step 1 in" in log
    assert "step 4/6  loss=" in log and " mse=" in log and "l2_grads=" in log
    assert "steps/s (training only, last 3 steps)" in log  # the window opens after the compiling step 1
    assert "eval at step 3 (" in log and "eval/mse=" in log
    assert "eval at step 6 (" in log


def test_loss_is_one_number_in_the_log_the_history_and_tensorboard(toy_run):
    workdir, log = toy_run
    final = reporting.read_metrics(workdir)[6]["loss"]
    assert float(re.search(r"step 6/6  loss=(\S+)", log).group(1)) == pytest.approx(final, rel=1e-3)
    assert [e.value for e in _accumulator(workdir).Scalars("loss") if e.step == 6] == [pytest.approx(final)]


def test_the_run_ends_with_one_summary_line(toy_run):
    workdir, log = toy_run
    summaries = [line for line in log.splitlines() if line.startswith("Trained steps")]
    assert len(summaries) == 1, log
    summary = summaries[0]
    assert summary.startswith("Trained steps 1..6 of 6 in ")
    assert re.search(r"\(startup \d+ s, compile \d+ s, train \d+ s, eval \d+ s, checkpoint \d+ s\)", summary)
    final = reporting.read_metrics(workdir)[6]["loss"]
    assert float(re.search(r"final loss=(\S+);", summary).group(1)) == pytest.approx(final, rel=1e-3)
    assert f"outputs in {workdir} (checkpoints, metrics.jsonl, tensorboard, images, timing.json)" in summary


def test_metrics_jsonl_has_the_windowed_rate(toy_run):
    workdir, _ = toy_run
    history = reporting.read_metrics(workdir)
    # the window opens after the compiling step 1 and holds the last WINDOW_REPORTS logging periods
    assert [history[s]["steps_per_sec_window"] for s in (2, 4, 6)] == [1.0, 3.0, 5.0]
    assert all(history[s]["steps_per_sec"] > 0 for s in (2, 4, 6))


class _FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_windowed_rate_excludes_evaluation_and_compile_pauses():
    clock = _FakeClock()
    timer = timing.StageTimer(started_at=0.0, clock=clock)
    progress = run_log.ProgressReporter(num_train_steps=100, every_steps=10, timer=timer, window_reports=2)
    with progress.compiling(0):
        clock.now += 120.0  # two minutes compiling step 1
    rates = []
    for step in range(2, 61):
        clock.now += 0.1  # 10 steps/s of training
        if step in (20, 40):
            with timer.stage("eval_s"):
                clock.now += 500.0
        if step == 30:
            with timer.stage("checkpoint_s"):
                clock.now += 50.0
        out = progress(step, {"loss": 1.0})
        if out:
            rates.append(out["steps_per_sec"])
    assert rates == pytest.approx([10.0] * len(rates))
    assert len(rates) == 6
    assert out["steps_per_sec_window"] == 20.0  # window_reports=2 periods of 10 steps


def test_step_time_column_names_its_measure():
    new = {1: {"steps_per_sec": 2.0, "steps_per_sec_window": 10.0}}
    old = {1: {"steps_per_sec": 2.0}}
    assert aggregate.steps_per_sec_measure(new) == "train"
    assert aggregate.steps_per_sec_measure(old) == "wall"
    assert aggregate.steps_per_sec_measure({}) is None
    results = {"sweep": "main", "split": "test", "confidence": 0.95, "groups": [], "runs": []}
    results["seeds_needed"] = {}
    table = tables.markdown({**results, "step_time_measures": {"train": 2, "wall": 1}}, "t")
    assert f"{aggregate.STEP_TIME_MEASURES['train']}: 2 run(s)" in table
    assert f"{aggregate.STEP_TIME_MEASURES['wall']}: 1 run(s)" in table


def _accumulator(workdir: pathlib.Path):
    from tensorboard.backend.event_processing import event_accumulator

    sizes = {event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0}
    acc = event_accumulator.EventAccumulator(str(workdir / "tensorboard"), size_guidance=sizes)
    return acc.Reload()


def test_tensorboard_reads_back_scalars_images_config_and_hparams(toy_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    workdir, _ = toy_run
    acc = _accumulator(workdir)
    tags = acc.Tags()
    assert {"loss", "mse", "steps_per_sec", "eval/mse"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("eval/mse")] == [3, 6]

    assert tags["images"] == ["images/generations"]
    images = acc.Images("images/generations")
    assert [e.step for e in images] == [3, 6]
    png = Image.open(io.BytesIO(images[-1].encoded_image_string))
    bare = plots.image_grid(np.zeros((2, 4, 4, 4, 3)))
    assert png.width > bare.shape[1] and png.height > bare.shape[0]  # row titles and captions around it
    saved = Image.open(workdir / "images" / "generations_step000006.png")
    assert saved.size == png.size

    def text(tag: str) -> str:
        return acc.Tensors(tag)[-1].tensor_proto.string_val[0].decode()

    assert "a long caption number 3 with several words" in text("images/generations/captions/text_summary")
    assert "data image (row 1), generated (row 2)" in text("images/generations/captions/text_summary")
    config_text = text("config/text_summary")
    assert json.loads(config_text)["num_train_steps"] == 6

    hparams = acc.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["eval/mse"]
    start = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["optimizer.learning_rate"].number_value == pytest.approx(3e-3)
    assert values["task"].string_value == "tests.toy_task:ToyRegressionTask"
    assert values["mesh_shape"].string_value == "(-1, 1, 1)"


def test_labeled_grid_has_row_titles_and_bounded_caption_lines():
    from PIL import ImageFont

    rows = np.zeros((2, 8, 8, 8, 3))
    captions = ["a red circle and two blue squares " * 3, "x" * 200]
    image = plots.labeled_image_grid(rows, ("input", "generated"), captions)
    bare = plots.image_grid(rows)
    assert image.shape[1] >= plots.MIN_CAPTION_WIDTH > bare.shape[1]
    font = ImageFont.load_default()
    for caption in captions:
        lines = plots.wrap_to_width(caption, font, 200)
        assert all(font.getlength(line) <= 200 for line in lines), lines
        assert "".join(lines).replace(" ", "") == caption.replace(" ", "")
    assert image.shape[0] > bare.shape[0] + 4 * 10  # several caption lines underneath


def test_qa_grid_wraps_long_answers_so_cells_do_not_overlap():
    long = "red circle and blue square and green triangle " * 4
    examples = [
        {"image": np.zeros((8, 8, 3)), "question": "what is there?", "predicted": long, "answer": long}
    ] * 4
    lines = grids.qa_label_lines(examples[0], wrap=30, max_lines=3)
    for block in lines:
        assert all(len(line) <= 30 for line in block.split("\n"))
        assert block.count("\n") < 3
    figure_texts = []
    grids.qa_grid(examples, io.BytesIO(), columns=2, on_figure=figure_texts.append)
    fig = figure_texts[0]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.texts]
    assert len(boxes) == 12
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def test_dataset_build_says_it_builds_locally_without_download(tmp_path, capfd):
    from infotok_jax import data

    with _absl_lines() as lines:
        data.prepare("scenes32", str(tmp_path), num_train=4, num_validation=2, num_test=2, num_holdout=2)
    printed = capfd.readouterr()
    assert "Downloading" not in printed.out + printed.err
    assert "downloaded" not in printed.out + printed.err
    log = "\n".join(lines)
    assert "Building dataset infotok_scenes locally from code (no download) into" in log, log
    assert "Built dataset infotok_scenes in" in log


def test_host_task_loss_is_the_host_loss_plus_infotok_and_captions_carry_the_verdict(tmp_path, monkeypatch):
    import importlib.util

    import flax.linen as nn
    import jax

    from infotok_jax import data
    from infotok_jax.data import experiment_data
    from infotok_jax.tasks.host_task import HostTask

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("host_config", REPO / "experiments" / "configs" / "host.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("host=ar,tiny")
    config.data.data_dir = str(tmp_path / "tiny")
    experiment_data.ensure_prepared(config.data)
    pipeline = data.make_pipeline(
        **experiment_data.pipeline_args(config.data, batch_size=4),
        split="validation",
        mesh=None,
        seed=0,
        shuffle=False,
    )
    batch = next(iter(pipeline))
    images = np.asarray(batch["image"])
    rows = np.stack([images, images])  # the data images as "generations": the oracle accepts them
    wrong = np.stack([images, np.zeros_like(images)])  # blank pictures: the oracle rejects them
    notes = {"caption_tokens": np.asarray(batch["caption_tokens"]), "objects": np.asarray(batch["objects"])}
    task = HostTask(config)
    captions = task.picture_captions("generations", rows, notes)
    assert len(captions) == 4
    assert all(c.endswith("  [oracle: correct]") and len(c.split()) > 4 for c in captions), captions
    assert all(c.endswith("  [oracle: wrong]") for c in task.picture_captions("generations", wrong, notes))

    # `loss` (log, metrics.jsonl, TensorBoard) is what is differentiated; `loss/host` leaves InfoTok out
    variables = dict(nn.unbox(jax.jit(task.init_variables)(jax.random.key(0), batch)))
    params = variables.pop("params")
    config.infotok.warmup_steps = 4  # at step 2 the IB weight is 1/2
    loss_fn = jax.jit(task.loss)  # eagerly, each of the host's operations would compile on its own
    loss, (metrics, _) = loss_fn(params, variables, batch, jax.random.key(1), jnp.asarray(2, jnp.int32))
    assert "loss/total" not in metrics and float(metrics["infotok/weight"]) == pytest.approx(0.5)
    infotok_term = metrics["infotok/weight"] * metrics["infotok/regularizer"]
    assert float(infotok_term) != 0.0
    assert float(loss) == pytest.approx(float(metrics["loss/host"] + infotok_term), rel=1e-5)

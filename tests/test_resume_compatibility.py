"""Which config changes a workdir accepts on resume (and the evaluation binary on scoring): the recorded
config against the current one, field by field."""

from __future__ import annotations

from infotok_jax.training import checkpointing


def test_a_moved_data_dir_and_a_new_learning_rate_are_resumable_other_optimizer_fields_not():
    saved = {"data": {"data_dir": "/old/tfds", "dim": 8}, "optimizer": {"learning_rate": 1.0, "b1": 0.9}}
    moved = {"data": {"data_dir": "/new/tfds", "dim": 8}, "optimizer": {"learning_rate": 0.1, "b1": 0.9}}
    assert checkpointing.incompatible_fields(saved, moved) == []
    changed = {"data": {"data_dir": "/old/tfds", "dim": 9}, "optimizer": {"learning_rate": 1.0, "b1": 0.8}}
    assert checkpointing.incompatible_fields(saved, changed) == ["data.dim", "optimizer.b1"]


def test_a_run_recorded_with_the_derived_x_view_size_matches_a_config_that_leaves_it_unset():
    """Runs recorded before x_view_size was derived (explicit 8 on 32x32) resume and evaluate with
    today's configs (unset); another explicit value still differs."""

    def config(size):
        return {"data": {"image_size": 32}, "infotok": {"x_view_size": size}}

    assert checkpointing.incompatible_fields(config(8), config(None)) == []
    assert checkpointing.incompatible_fields(config(None), config(8)) == []
    assert checkpointing.incompatible_fields(config(4), config(None)) == ["infotok.x_view_size"]

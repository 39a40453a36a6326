"""The evaluation information plane: the float64 nHSIC agrees with the training estimator, a permuted pair
sits at its permutation floor (excess ~ 0), identical variables give 1, the scenes' nuisance field is data
that the pixels depend on, and tokens equal to the pixels measure exactly what the pixels do."""

import numpy as np
import pytest

from infotok_jax import data
from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.estimators import normalized_hsic
from infotok_jax.evaluate import information_plane

SIZES = {"num_train": 16, "num_validation": 256, "num_test": 16, "num_holdout": 16, "nuisance": 0.5}


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("scenes"))
    data.prepare("scenes32", data_dir, **SIZES)
    return list(data.iterate_numpy("scenes32", data_dir, "validation", 64, dataset_kwargs=SIZES))


def test_float64_nhsic_matches_the_training_estimator():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6))
    b = np.tanh(a[:, :2]) + 0.3 * rng.normal(size=(300, 2))
    value, _ = information_plane.nhsic_with_floor(a, b, num_permutations=1)
    reference = float(normalized_hsic(a.astype(np.float32), b.astype(np.float32)))
    assert value == pytest.approx(reference, rel=2e-4)
    assert information_plane.nhsic_with_floor(a, a, 1)[0] == pytest.approx(1.0, abs=1e-12)


def test_a_permuted_pair_sits_at_its_permutation_floor():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(512, 16))
    b = np.tanh(a[:, :4])[rng.permutation(512)]  # a function of a, with the pairing destroyed
    value, floor = information_plane.nhsic_with_floor(a, b, num_permutations=50, seed=3)
    assert floor > 0.005  # the floor is not 0 at finite n ...
    assert value - floor == pytest.approx(0.0, abs=0.01)  # ... and an independent pair is at it
    paired, paired_floor = information_plane.nhsic_with_floor(a, np.tanh(a[:, :4]), num_permutations=50)
    assert paired - paired_floor > 0.2 and paired_floor == pytest.approx(floor, abs=0.01)
    assert np.isnan(information_plane.nhsic_with_floor(a, np.zeros((512, 3)), 5)[0])  # constant: undefined


def test_the_probe_decodes_a_linear_target_and_not_an_independent_one():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(512, 40))
    linear, floor = information_plane.probe_r2(x, x[:, :5] @ rng.normal(size=(5, 3)), num_permutations=5)
    assert linear > 0.9 and floor < 0.0
    independent, _ = information_plane.probe_r2(x, rng.normal(size=(512, 3)), num_permutations=5)
    assert -0.1 < independent < 0.02
    assert np.isnan(information_plane.probe_r2(x, np.ones((512, 2)), 1)[0])


def test_scene_targets_bind_attributes_to_cells():
    objects = scenes_spec.objects_to_array([(2, 5, 1, 4), (0, 1, 0, 8)])[None]
    y = information_plane.scene_targets(objects).reshape(9, 13)
    expected = np.zeros((9, 13))
    expected[4, [0, 1 + 2, 5 + 5, 11 + 1]] = 1.0
    expected[8, [0, 1 + 0, 5 + 1, 11 + 0]] = 1.0
    np.testing.assert_array_equal(y, expected)


def test_nuisance_is_data_and_pixel_tokens_measure_what_the_pixels_do(batches):
    first = batches[0]
    assert (
        first["nuisance"].shape == (64, scenes_render.NUISANCE_DIM) and first["nuisance"].dtype == np.float32
    )
    drawn = scenes_render.render_example(0, "validation", int(first["example_id"][3]), 32, 0.5)["nuisance"]
    np.testing.assert_array_equal(first["nuisance"][3], drawn)

    pixels = information_plane.evaluate_information(
        lambda x: x.reshape(len(x), 16, -1), batches, num_examples=200, num_permutations=10
    )
    assert pixels["num_examples"] == 200
    assert pixels["nhsic_xz_flat"] == pytest.approx(1.0, abs=1e-9)  # Z = X: the same Gram matrix
    assert pixels["nhsic_zn_flat"] == pytest.approx(pixels["nhsic_xn"], abs=1e-9)
    assert pixels["excess_nhsic_zy_flat"] > 0.1  # the pixels carry the objects


def _keeper(batches, field):
    """An encoder that keeps exactly one thing about each image: its nuisance field or its objects."""
    table = {
        x.tobytes(): (
            n.reshape(25, 3)
            if field == "nuisance"
            else information_plane.scene_targets(o[None]).reshape(9, 13)
        )
        for b in batches
        for x, n, o in zip(b["image"], b["nuisance"], b["objects"], strict=True)
    }
    return lambda images: np.stack([table[x.tobytes()] for x in images])


def test_an_encoder_keeping_only_the_nuisance_or_only_the_objects_is_told_apart(batches):
    nuisance = information_plane.evaluate_information(
        _keeper(batches, "nuisance"), batches, num_permutations=20
    )
    assert nuisance["num_examples"] == 256
    assert nuisance["nhsic_zn_flat"] == pytest.approx(1.0, abs=1e-9)
    assert nuisance["excess_nhsic_zy_flat"] == pytest.approx(0.0, abs=0.02)
    assert nuisance["probe_r2_zn_flat"] > 0.9 and nuisance["probe_r2_zy_flat"] < 0.02
    objects = information_plane.evaluate_information(
        _keeper(batches, "objects"), batches, num_permutations=20
    )
    assert objects["nhsic_zy_flat"] == pytest.approx(1.0, abs=1e-9)
    assert objects["excess_nhsic_zn_flat"] == pytest.approx(0.0, abs=0.02)
    assert objects["excess_nhsic_zy_flat"] > 0.5
    assert objects["probe_r2_zy_flat"] > 0.6 and objects["probe_r2_zn_flat"] < 0.02
    assert "excess_probe_r2_zn_flat" not in objects  # a probe's shuffled floor is not subtracted

    rng = np.random.default_rng(0)
    blind = information_plane.evaluate_information(
        lambda x: rng.normal(size=(len(x), 4, 3)), batches, num_permutations=20
    )
    for pair in ("xz_pooled", "xz_flat", "zy_pooled", "zy_flat", "zn_pooled", "zn_flat"):
        assert blind[f"floor_perm_nhsic_{pair}"] > 0.0
        assert blind[f"excess_nhsic_{pair}"] == pytest.approx(0.0, abs=0.02), pair

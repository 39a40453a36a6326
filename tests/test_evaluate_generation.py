"""evaluate_generation: ground-truth renders pass the oracle, blank images fail, the other-renders floor
matches an independent count over the same pairings, noise scores exactly its floor, an identity
tokenizer puts the reconstruction ceiling at the truth (1.0), and results are a pure function of the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import data
from infotok_jax.data import scenes_render, scenes_spec
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import generation

SIZES = {"num_train": 64, "num_validation": 32, "num_test": 32, "num_holdout": 32}
KEY = jax.random.key(3)
METRICS = generation.METRICS


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("scenes"))
    prepared = data.prepare("scenes32", data_dir, **SIZES)
    batches = list(data.iterate_numpy("scenes32", data_dir, "train", 24, dataset_kwargs=SIZES))  # 24, 24, 16
    lookup = {c.tobytes(): x for b in batches for c, x in zip(b["caption_tokens"], b["image"], strict=True)}

    def truth(captions, key):
        del key
        return np.stack([lookup[np.asarray(c, np.int32).tobytes()] for c in captions])

    return {"tok": WordTokenizer.load(prepared.tokenizer_path), "batches": batches, "truth": truth}


def _metrics(res):
    return {k: v for k, v in res.items() if k != "examples"}


def test_ground_truth_images_pass_and_blank_images_fail(scenes):
    good = generation.evaluate_generation(scenes["truth"], scenes["batches"], KEY, 32)
    assert good["num_prompts"] == good["num_images"] == 64
    for name in METRICS:
        assert good[name] >= 0.99, name
    blank = generation.evaluate_generation(
        lambda c, k: np.full((len(c), 32, 32, 3), scenes_render.BACKGROUND_MEAN, np.float32),
        scenes["batches"],
        KEY,
        32,
    )
    assert blank["all_correct"] <= 0.01 and blank["position_correct"] <= 0.01
    for name in METRICS:  # the floors do not depend on the model
        for prefix in ("floor_other_", "floor_noise_", "truth_"):
            assert blank[prefix + name] == good[prefix + name]
    assert good["truth_all_correct"] == 1.0 and "ceiling_recon_all_correct" not in good
    assert list(METRICS[:3]) == ["all_correct", "color_correct", "count_correct"]  # headline first


def test_noise_scores_its_floor_exactly_and_the_floor_is_high_on_position(scenes):
    noise_key, shape_of = jax.random.split(KEY, 3)[2], lambda c: (len(c), 32, 32, 3)
    calls = []

    def noise(captions, key):  # the same draws the floor uses: batch b's noise is fold_in(noise_key, b)
        calls.append(None)
        return jax.random.uniform(jax.random.fold_in(noise_key, len(calls) - 1), shape_of(captions))

    res = generation.evaluate_generation(noise, scenes["batches"], KEY, 32)
    for name in METRICS:
        assert res[name] == res[f"floor_noise_{name}"], name
    # the oracle sees an object in every cell of noise: position is no skill measure, all-correct is
    assert res["floor_noise_position_correct"] == 1.0 and res["floor_noise_all_correct"] == 0.0


def test_identity_tokenizer_puts_the_reconstruction_ceiling_at_the_truth(scenes):
    blank = lambda c, k: np.zeros((len(c), 32, 32, 3), np.float32)
    same = generation.evaluate_generation(blank, scenes["batches"], KEY, 32, reconstruct_fn=lambda x: x)
    for name in METRICS:
        assert same[f"ceiling_recon_{name}"] == same[f"truth_{name}"], name
    assert same["ceiling_recon_all_correct"] == 1.0
    gray = generation.evaluate_generation(
        blank, scenes["batches"], KEY, 32, reconstruct_fn=lambda x: np.full_like(x, 0.2)
    )
    assert gray["ceiling_recon_all_correct"] == 0.0 and gray["ceiling_recon_position_correct"] == 0.0


def test_other_floor_matches_an_independent_count_over_the_same_pairings(scenes):
    draws = 3
    res = generation.evaluate_generation(scenes["truth"], scenes["batches"], KEY, 32, other_draws=draws)
    objects = [scenes_spec.array_to_objects(o) for b in scenes["batches"] for o in b["objects"]]
    chance_key = jax.random.split(KEY, 3)[1]
    hits = dict.fromkeys(METRICS, 0)
    num_obj = 0
    for d in range(draws):
        perm = generation.derangement(jax.random.fold_in(chance_key, d), len(objects))
        for i, j in enumerate(perm):
            other = {cell: (shape, color, size) for shape, color, size, cell in objects[j]}
            for shape, color, size, cell in objects[i]:
                got = other.get(cell)
                num_obj += 1
                hits["position_correct"] += got is not None
                hits["shape_correct"] += got is not None and got[0] == shape
                hits["color_correct"] += got is not None and got[1] == color
                hits["size_correct"] += got is not None and got[2] == size
            hits["count_correct"] += len(objects[i]) == len(objects[j])
            hits["all_correct"] += set(objects[i]) == set(objects[j])
    for name in METRICS:
        denominator = num_obj if name in generation.PER_OBJECT else draws * len(objects)
        assert res[f"floor_other_{name}"] == pytest.approx(hits[name] / denominator, abs=0.02), name
    assert 0.0 <= res["floor_other_all_correct"] < 0.2
    assert 0.0 < res["floor_other_position_correct"] < 1.0


def test_deterministic_for_a_fixed_key_and_samples_use_distinct_keys(scenes):
    keys_seen = []

    def coin(captions, key):
        """Ground truth or blank depending on the key: the score depends on the key only through it."""
        keys_seen.append(np.asarray(jax.random.key_data(key)).tobytes())
        keep = np.asarray(jax.random.bernoulli(key, 0.5, (len(captions),)))
        return jnp.where(keep[:, None, None, None], scenes["truth"](captions, key), 0.2)

    a = generation.evaluate_generation(coin, scenes["batches"], KEY, 32, samples_per_prompt=2)
    b = generation.evaluate_generation(coin, scenes["batches"], KEY, 32, samples_per_prompt=2)
    c = generation.evaluate_generation(coin, scenes["batches"], jax.random.key(4), 32, samples_per_prompt=2)
    assert _metrics(a) == _metrics(b)
    assert _metrics(a) != _metrics(c)
    assert a["num_images"] == 128 and 0.2 < a["all_correct"] < 0.8
    assert len(set(keys_seen[:6])) == 6  # 3 batches x 2 samples, all different keys


def test_examples_and_output_formats(scenes):
    dict_fn = lambda c, k: {"images": jnp.asarray(scenes["truth"](c, k))}
    with_tok = generation.evaluate_generation(
        dict_fn, scenes["batches"], KEY, 32, tokenizer=scenes["tok"], num_examples=5
    )
    uint8_fn = lambda c, k: np.round(scenes["truth"](c, k) * 255).astype(np.uint8)
    without = generation.evaluate_generation(uint8_fn, scenes["batches"], KEY, 32, num_examples=5)
    assert with_tok["all_correct"] == without["all_correct"] == 1.0
    assert len(with_tok["examples"]) == 5
    first = scenes["batches"][0]
    for i, (x, y) in enumerate(zip(with_tok["examples"], without["examples"], strict=True)):
        assert x["caption"] == y["caption"] == scenes["tok"].decode(first["caption_tokens"][i])
        np.testing.assert_allclose(x["image"], first["image"][i])


def test_derangement_and_errors(scenes):
    perm = generation.derangement(jax.random.key(0), 50)
    assert sorted(perm.tolist()) == list(range(50)) and np.all(perm != np.arange(50))
    np.testing.assert_array_equal(perm, generation.derangement(jax.random.key(0), 50))
    with pytest.raises(ValueError, match="n >= 2"):
        generation.derangement(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="generate_fn gave images of shape"):
        generation.evaluate_generation(lambda c, k: np.zeros((len(c), 16, 16, 3)), scenes["batches"], KEY, 32)
    no_scene = [{**scenes["batches"][0], "objects": np.full_like(scenes["batches"][0]["objects"], -1)}]
    with pytest.raises(ValueError, match="scenes dataset"):
        generation.evaluate_generation(scenes["truth"], no_scene, KEY, 32)

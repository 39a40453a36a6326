"""evaluate_understanding: a cheating oracle scores 1, a constant and a random answerer score what the data
says they should, chance levels follow the scenes spec, the image-blind floor of a perfect image reader is
the accuracy of answering from the neighbour's scene, a model that ignores the image scores its blind floor
exactly, the majority floor is the best constant answer, and bad inputs fail with clear errors."""

import collections

import jax.numpy as jnp
import numpy as np
import pytest

from infotok_jax import data
from infotok_jax.data import experiment_data, scenes_spec
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import understanding

SIZES = {"num_train": 64, "num_validation": 32, "num_test": 32, "num_holdout": 32}
# Answer sets written out from the spec's vocabularies (the library enumerates them through scene QA).
ANSWERS = {
    "color": scenes_spec.COLORS,
    "shape": scenes_spec.SHAPES,
    "size": scenes_spec.SIZES,
    "count": scenes_spec.NUMBER_WORDS[1 : scenes_spec.MAX_OBJECTS + 1],
    "position": scenes_spec.CELL_PHRASES,
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("scenes"))
    prepared = data.prepare("scenes32", data_dir, **SIZES)
    tok = WordTokenizer.load(prepared.tokenizer_path)

    def batches(split, batch_size, seed=0):
        pipe = data.iterate_numpy("scenes32", data_dir, split, batch_size, seed=seed, dataset_kwargs=SIZES)
        return list(pipe)

    return {"dir": data_dir, "tok": tok, "batches": batches}


def _rows(batches):
    """Per example: (image bytes + question key, question type, true answer text via tokenizer.decode)."""
    return [
        (
            b["image"][i].tobytes() + b["question_tokens"][i].tobytes(),
            int(b["question_type"][i]),
            b["answer_tokens"][i],
        )
        for b in batches
        for i in range(len(b["image"]))
    ]


def test_answer_sets_and_chance_follow_the_spec():
    got = understanding.possible_answers()
    assert set(got) == set(scenes_spec.QUESTION_TYPES)
    for name, answers in ANSWERS.items():
        assert set(got[name]) == set(answers), name
    chance = understanding.chance_levels()
    expected = {"color": 1 / 6, "shape": 1 / 4, "size": 1 / 2, "count": 1 / 3, "position": 1 / 9}
    for name, value in expected.items():
        assert chance[name] == pytest.approx(value)


def test_cheating_oracle_is_perfect_and_counts_match_the_data(scenes):
    batches = scenes["batches"]("validation", 10)  # 32 examples: a ragged last batch of 2
    lookup = {key: ans for key, _, ans in _rows(batches)}

    def oracle(images, questions, max_len):
        assert max_len == batches[0]["answer_tokens"].shape[1]
        pairs = zip(np.asarray(images), np.asarray(questions), strict=True)
        keys = [x.tobytes() + q.tobytes() for x, q in pairs]
        return jnp.asarray(np.stack([lookup[k] for k in keys]))  # jax output is accepted

    res = understanding.evaluate_understanding(oracle, batches, scenes["tok"], blind_floor=False)
    types = np.array([t for _, t, _ in _rows(batches)])
    assert res["accuracy"] == 1.0 and res["num_examples"] == 32 and res["num_skipped"] == 0
    chance = understanding.chance_levels()
    for t, name in enumerate(scenes_spec.QUESTION_TYPES):
        assert res[f"num_{name}"] == int((types == t).sum())
        assert res[f"accuracy_{name}"] == 1.0 or res[f"num_{name}"] == 0
    expected_chance = np.mean([chance[scenes_spec.QUESTION_TYPES[t]] for t in types])
    assert res["chance_accuracy"] == pytest.approx(expected_chance)
    assert len(res["examples"]) == 16 and all(ex["correct"] for ex in res["examples"])
    first = res["examples"][0]
    assert first["question"] == scenes["tok"].decode(batches[0]["question_tokens"][0])
    assert first["answer"] == first["predicted"] == scenes["tok"].decode(batches[0]["answer_tokens"][0])


def test_constant_answer_scores_its_frequency_per_type(scenes):
    tok, batches = scenes["tok"], scenes["batches"]("train", 16)
    red = tok.batch_encode(["red"], batches[0]["answer_tokens"].shape[1])[0]
    res = understanding.evaluate_understanding(
        lambda images, q, n: np.tile(red, (len(images), 1)), batches, tok
    )
    rows = _rows(batches)
    for t, name in enumerate(scenes_spec.QUESTION_TYPES):
        hits = [tok.decode(ans) == "red" for _, qt, ans in rows if qt == t]
        assert res[f"accuracy_{name}"] == pytest.approx(np.mean(hits)), name
    assert res["accuracy"] == pytest.approx(np.mean([tok.decode(a) == "red" for _, _, a in rows]))
    assert 0 < res["accuracy_color"] and res["accuracy_shape"] == 0.0
    for name in ("", "_color", "_shape", "_count"):  # ignoring the image, it scores its blind floor exactly
        assert res[f"floor_blind_accuracy{name}"] == res[f"accuracy{name}"]
    assert res["num_blind"] == res["num_examples"]


def _scene_reader(batches, tok):
    """A perfect answerer that reads the scene of whatever image it is given (its objects, by image bytes)
    and answers the question about that scene; 'zero' when the scene has no such referent."""
    scenes = {
        x.tobytes(): scenes_spec.array_to_objects(o)
        for b in batches
        for x, o in zip(b["image"], b["objects"], strict=True)
    }

    def answer_for(objects, question):
        return {q: a for q, a, _ in scenes_spec.questions_answers(objects)}.get(question, "zero")

    def answer_fn(images, questions, max_len):
        texts = [
            answer_for(scenes[x.tobytes()], tok.decode(q)) for x, q in zip(images, questions, strict=True)
        ]
        return tok.batch_encode(texts, max_len)

    return answer_fn, scenes, answer_for


def test_blind_floor_of_a_perfect_reader_is_answering_from_the_neighbours_scene(scenes):
    tok, batches = scenes["tok"], scenes["batches"]("validation", 10)  # 10, 10, 10, 2
    answer_fn, by_image, answer_for = _scene_reader(batches, tok)
    res = understanding.evaluate_understanding(answer_fn, batches, tok)
    assert res["accuracy"] == 1.0
    hits = collections.defaultdict(list)
    for b in batches:
        for i in range(len(b["image"])):
            neighbour = by_image[b["image"][i - 1].tobytes()]  # images rolled by one: row i sees row i-1
            question, truth = tok.decode(b["question_tokens"][i]), tok.decode(b["answer_tokens"][i])
            hits[int(b["question_type"][i])].append(answer_for(neighbour, question) == truth)
    assert res["floor_blind_accuracy"] == pytest.approx(np.mean(sum(hits.values(), [])))
    assert res["floor_blind_accuracy"] < 0.7  # the neighbour's scene rarely answers the question
    for t, name in enumerate(scenes_spec.QUESTION_TYPES):
        if hits[t]:
            assert res[f"floor_blind_accuracy_{name}"] == pytest.approx(np.mean(hits[t])), name


def test_majority_floor_is_the_best_constant_answer_per_type(scenes):
    tok, batches = scenes["tok"], scenes["batches"]("train", 16)
    res = understanding.evaluate_understanding(lambda im, q, n: q[:, :n], batches, tok, blind_floor=False)
    answers = collections.defaultdict(collections.Counter)
    for b in batches:
        for t, a in zip(b["question_type"], b["answer_tokens"], strict=True):
            answers[int(t)][tok.decode(a)] += 1
    best = {t: max(c.values()) for t, c in answers.items()}
    assert res["floor_majority_accuracy"] == pytest.approx(sum(best.values()) / res["num_examples"])
    for t, name in enumerate(scenes_spec.QUESTION_TYPES):
        if t in answers:
            assert res[f"floor_majority_accuracy_{name}"] == pytest.approx(best[t] / sum(answers[t].values()))
            assert answers[t][res[f"majority_answer_{name}"]] == best[t]
    assert res["num_blind"] == 0 and np.isnan(res["floor_blind_accuracy"])


def _question_type(text):
    """'what color ...' -> color, 'how many ...' -> count, 'where is ...' -> position."""
    words = text.split()
    return {"how": "count", "where": "position"}.get(words[0], words[1])


def test_random_answerer_is_near_chance(scenes):
    tok = scenes["tok"]
    batches = [b for seed in range(4) for b in scenes["batches"]("train", 32, seed=seed)]  # 256 QA pairs
    rng = np.random.default_rng(0)
    per_example_chance = []

    def guess(images, questions, max_len):
        texts = []
        for q in questions:
            options = ANSWERS[_question_type(tok.decode(q))]
            per_example_chance.append(1.0 / len(options))
            texts.append(options[int(rng.integers(len(options)))])
        return tok.batch_encode(texts, max_len)

    res = understanding.evaluate_understanding(guess, batches, tok)
    p = np.array(per_example_chance)
    assert res["chance_accuracy"] == pytest.approx(p.mean())
    sd = np.sqrt((p * (1 - p)).sum()) / p.size  # Poisson-binomial standard deviation of the accuracy
    assert abs(res["accuracy"] - p.mean()) < 4 * sd, (res["accuracy"], p.mean(), sd)


def test_out_of_vocabulary_predictions_are_wrong_not_errors(scenes):
    tok, batches = scenes["tok"], scenes["batches"]("validation", 16)
    res = understanding.evaluate_understanding(
        lambda im, q, n: np.full((len(im), n), tok.vocab_size + 5, np.int32), batches, tok
    )
    assert res["accuracy"] == 0.0
    assert res["examples"][0]["predicted"].startswith("<id:")


def test_endless_pipeline_needs_max_batches(scenes):
    cfg = experiment_data.default_config("scenes")
    cfg.data_dir, cfg.nuisance, cfg.num_train, cfg.num_eval = scenes["dir"], 0.0, 64, 32
    pipe = data.make_pipeline(**experiment_data.pipeline_args(cfg, batch_size=8), split="train", mesh=None)
    echo = lambda im, q, n: np.zeros((len(im), n), np.int32)
    with pytest.raises(ValueError, match="max_batches"):
        understanding.evaluate_understanding(echo, pipe, scenes["tok"])
    res = understanding.evaluate_understanding(echo, pipe, scenes["tok"], max_batches=3)
    assert res["num_examples"] == 24


def test_bad_inputs_raise_clear_errors(scenes):
    tok, batches = scenes["tok"], scenes["batches"]("validation", 16)
    with pytest.raises(ValueError, match="answer_fn returned shape"):
        understanding.evaluate_understanding(lambda im, q, n: np.zeros((3,), np.int32), batches, tok)
    no_qa = [{**batches[0], "question_type": np.full_like(batches[0]["question_type"], -1)}]
    with pytest.raises(ValueError, match="no QA pair"):
        understanding.evaluate_understanding(lambda im, q, n: q, no_qa, tok)

"""Understanding accuracy of any `answer_fn`, overall and per question type, next to the floors it must beat.

The model is a plain callable `answer_fn(images_BxHxWx3, question_tokens_BxLq, max_answer_len)` returning
answer tokens (B, La) in the data format (BOS, words, EOS, pad); predicted and true answers are decoded to
words (up to the first EOS, BOS and pad dropped) and compared as strings. Examples without a QA pair
(question_type -1) are skipped.

Chance is the accuracy of a uniform guess among the answers a question type can have. The answer sets are
enumerated from `scenes_spec` itself (every single-object scene, and scenes of 1..MAX_OBJECTS objects for
counting), not written down, so they follow the spec if it changes: color 1/6, shape 1/4, size 1/2,
count 1/3 and position 1/9 today. Overall chance is the count-weighted mean over the evaluated examples.
Uniform chance is NOT a floor (a model that learns the answer prior beats it without looking), so two
empirical floors are reported beside every accuracy:
  floor_blind_*     the same `answer_fn` on the same questions with the images rolled by one position
                    across the batch (every question is asked about another example's image). A model
                    that ignores the image scores the same here as on the true images; skill is the gap.
  floor_majority_*  the best constant answer per question type, chosen on the evaluated examples
                    themselves (so an upper bound on any answerer that ignores both image and question
                    text beyond its type): a function of the data only.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from infotok_jax.data import scenes_spec
from infotok_jax.data.text_tokenizer import TextTokenizer
from infotok_jax.evaluate.reconstruction import Batch, take_batches

QUESTION_TYPES = scenes_spec.QUESTION_TYPES


@functools.lru_cache(maxsize=1)
def possible_answers() -> dict[str, tuple[str, ...]]:
    """Every answer each question type can have, enumerated from `scenes_spec` (sorted per type)."""
    found: dict[int, set[str]] = {t: set() for t in range(len(QUESTION_TYPES))}
    ranges = (len(scenes_spec.SHAPES), len(scenes_spec.COLORS), len(scenes_spec.SIZES), scenes_spec.NUM_CELLS)
    for obj in itertools.product(*(range(n) for n in ranges)):
        for _, answer, qtype in scenes_spec.questions_answers([obj]):
            found[qtype].add(answer)
    for num in range(1, scenes_spec.MAX_OBJECTS + 1):
        # distinct cells and distinct (shape, color) pairs, as a scene requires
        scene = [(i % len(scenes_spec.SHAPES), i % len(scenes_spec.COLORS), 0, i) for i in range(num)]
        for _, answer, qtype in scenes_spec.questions_answers(scene):
            found[qtype].add(answer)
    return {QUESTION_TYPES[t]: tuple(sorted(found[t])) for t in found}


def chance_levels() -> dict[str, float]:
    """Uniform-guess accuracy per question type: 1 / number of possible answers."""
    return {name: 1.0 / len(answers) for name, answers in possible_answers().items()}


def decode_text(tokenizer: TextTokenizer, ids: Sequence[int]) -> str:
    """Text of `ids` up to the first EOS, without BOS/pad. Ids outside the text vocabulary (e.g. image
    codes of a host with a shared vocabulary) become `<id:N>`, so they count as wrong instead of raising."""
    kept = []
    for i in (int(v) for v in ids):
        if i == tokenizer.eos_id:
            break
        if i not in (tokenizer.pad_id, tokenizer.bos_id):
            kept.append(i)
    if all(0 <= i < tokenizer.vocab_size for i in kept):
        return tokenizer.decode(kept)
    return " ".join(tokenizer.decode([i]) if 0 <= i < tokenizer.vocab_size else f"<id:{i}>" for i in kept)


def evaluate_understanding(
    answer_fn: Callable[[np.ndarray, np.ndarray, int], Any],
    batches: Iterable[Batch],
    tokenizer: TextTokenizer,
    max_batches: int | None = None,
    max_answer_len: int | None = None,
    num_examples: int = 16,
    blind_floor: bool = True,
) -> dict[str, Any]:
    """Exact-match accuracy of `answer_fn` over the QA pairs of `batches`.

    Args:
      answer_fn: (images (B, H, W, 3) float32, question_tokens (B, Lq) int32, max_answer_len) -> answer
        tokens (B, La), numpy or jax.
      batches: numpy batches with image, question_tokens, answer_tokens and question_type fields.
      tokenizer: the dataset's text tokenizer (decodes questions and answers).
      max_batches: evaluate at most this many batches (required for endless pipelines).
      max_answer_len: answer length passed to `answer_fn`; default: the batch's answer_tokens length.
      num_examples: how many (image, question, predicted, true) examples to keep, in data order.
      blind_floor: also answer every batch with its images rolled by one (doubles the answer_fn calls);
        batches with a single QA example cannot be rolled and are left out of the blind floor only.

    Returns:
      accuracy, floor_blind_accuracy, floor_majority_accuracy, chance_accuracy, num_examples (QA examples
      scored), num_skipped (examples without QA), num_blind (examples in the blind floor), and per question
      type T: accuracy_T (NaN when no example has type T), floor_blind_accuracy_T,
      floor_majority_accuracy_T, chance_accuracy_T, num_T, majority_answer_T (text); plus "examples": a
      list of dicts {image, question, predicted, answer, question_type, correct}.
    """
    correct = np.zeros(len(QUESTION_TYPES), np.int64)
    counts = np.zeros(len(QUESTION_TYPES), np.int64)
    blind_correct = np.zeros(len(QUESTION_TYPES), np.int64)
    blind_counts = np.zeros(len(QUESTION_TYPES), np.int64)
    answer_counts: list[dict[str, int]] = [{} for _ in QUESTION_TYPES]
    skipped, examples = 0, []
    for batch in take_batches(batches, max_batches):
        qtype_B = np.asarray(batch["question_type"], np.int32)
        keep = qtype_B >= 0
        skipped += int((~keep).sum())
        if not keep.any():
            continue
        images = np.asarray(batch["image"], np.float32)[keep]
        if not np.all(np.isfinite(images)):
            raise ValueError("batch['image'] holds NaN or Inf values; check the dataset")
        questions = np.asarray(batch["question_tokens"], np.int32)[keep]
        truth = np.asarray(batch["answer_tokens"], np.int32)[keep]
        length = truth.shape[1] if max_answer_len is None else int(max_answer_len)
        pred = _answers(answer_fn, images, questions, length)
        blind = images.shape[0] > 1 and blind_floor
        pred_blind = _answers(answer_fn, np.roll(images, 1, axis=0), questions, length) if blind else None
        for i, qtype in enumerate(qtype_B[keep]):
            predicted, answer = decode_text(tokenizer, pred[i]), decode_text(tokenizer, truth[i])
            hit = predicted == answer
            counts[qtype] += 1
            correct[qtype] += hit
            answer_counts[qtype][answer] = answer_counts[qtype].get(answer, 0) + 1
            if pred_blind is not None:
                blind_counts[qtype] += 1
                blind_correct[qtype] += decode_text(tokenizer, pred_blind[i]) == answer
            if len(examples) < num_examples:
                examples.append(
                    {
                        "image": images[i],
                        "question": decode_text(tokenizer, questions[i]),
                        "predicted": predicted,
                        "answer": answer,
                        "question_type": QUESTION_TYPES[qtype],
                        "correct": bool(hit),
                    }
                )
    total = int(counts.sum())
    if total == 0:
        raise ValueError(
            "batches held no QA pair (question_type is -1 everywhere or no batch); "
            "understanding needs a dataset with questions, e.g. scenes32"
        )
    chance = chance_levels()
    chance_B = sum(counts[t] * chance[name] for t, name in enumerate(QUESTION_TYPES))
    majority = [max(c.items(), key=lambda kv: (kv[1], kv[0])) if c else ("", 0) for c in answer_counts]
    majority_hits = np.array([n for _, n in majority], np.int64)
    out: dict[str, Any] = {
        "accuracy": float(correct.sum() / total),
        "floor_blind_accuracy": _ratio(blind_correct.sum(), blind_counts.sum()),
        "floor_majority_accuracy": float(majority_hits.sum() / total),
        "chance_accuracy": float(chance_B / total),
        "num_examples": total,
        "num_skipped": skipped,
        "num_blind": int(blind_counts.sum()),
    }
    for t, name in enumerate(QUESTION_TYPES):
        out[f"accuracy_{name}"] = _ratio(correct[t], counts[t])
        out[f"floor_blind_accuracy_{name}"] = _ratio(blind_correct[t], blind_counts[t])
        out[f"floor_majority_accuracy_{name}"] = _ratio(majority_hits[t], counts[t])
        out[f"chance_accuracy_{name}"] = chance[name]
        out[f"num_{name}"] = int(counts[t])
        out[f"majority_answer_{name}"] = majority[t][0]
    out["examples"] = examples
    return out


def _ratio(hits: int, count: int) -> float:
    return float(hits / count) if count else float("nan")


def _answers(answer_fn: Callable, images: np.ndarray, questions: np.ndarray, length: int) -> np.ndarray:
    pred = np.asarray(answer_fn(images, questions, length))
    if pred.ndim != 2 or pred.shape[0] != images.shape[0]:
        raise ValueError(
            f"answer_fn returned shape {pred.shape}; expected ({images.shape[0]}, "
            f"answer_length) answer tokens for {images.shape[0]} questions"
        )
    return pred

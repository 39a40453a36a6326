r"""Model-free reference levels of the evaluation on the default scenes data (32x32, nuisance 0.5).

Prints, per split, what the evaluation binary's floors are before any model is trained:
  understanding  the best constant answer per question type (floor_majority_*) next to uniform chance;
  generation     the scene oracle on uniform noise (floor_noise_*), on true renders of other prompts
                 (floor_other_*) and on the true images (truth_*);
  information    nHSIC and its permutation floor for a stand-in "tokenizer" that cuts the image into 16
                 patches (Z = pixels), at n = 128 (the in-training evaluation's 2 x 64) and n = 512, and
                 the ridge probe's R^2 (with its shuffled-target floor) at n = 512.
The evaluation splits' first examples do not depend on the build size, so a build with few training
examples gives the same validation/test/holdout examples as the full one.

  python experiments/measure_floors.py --data_dir=/tmp/floors --num_examples=512
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from infotok_jax import data
from infotok_jax.data.text_tokenizer import WordTokenizer
from infotok_jax.evaluate import generation, information_plane, understanding


def patches(images: np.ndarray) -> np.ndarray:
    """(B, 32, 32, 3) -> 16 tokens of 8x8x3 pixels: (B, 16, 192)."""
    b = images.shape[0]
    return images.reshape(b, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, 16, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--num_examples", type=int, default=512)
    parser.add_argument("--nuisance", type=float, default=0.5)
    args = parser.parse_args()
    sizes = {
        "num_train": 16,
        "num_validation": args.num_examples,
        "num_test": args.num_examples,
        "num_holdout": args.num_examples,
        "nuisance": args.nuisance,
    }
    prepared = data.prepare("scenes32", args.data_dir, **sizes)
    tok = WordTokenizer.load(prepared.tokenizer_path)
    for split in ("validation", "test", "holdout"):
        batches = list(data.iterate_numpy("scenes32", args.data_dir, split, 128, dataset_kwargs=sizes))
        const = lambda images, q, n: np.zeros((len(images), n), np.int32)  # noqa: E731
        und = understanding.evaluate_understanding(const, batches, tok, blind_floor=False)
        gen = generation.evaluate_generation(
            lambda c, k: np.zeros((len(c), 32, 32, 3), np.float32), batches, jax.random.key(0), 32
        )
        print(f"\n== {split}: {und['num_examples']} questions, {gen['num_prompts']} prompts")
        print("understanding  type: majority floor / uniform chance")
        for name in understanding.QUESTION_TYPES + ("",):
            suffix = f"_{name}" if name else ""
            print(
                f"  {name or 'overall':9s} {und['floor_majority_accuracy' + suffix]:.3f} / "
                f"{und['chance_accuracy' + suffix]:.3f}"
            )
        print("generation     metric: noise floor / other-renders floor / truth")
        for name in generation.METRICS:
            print(
                f"  {name:17s} {gen['floor_noise_' + name]:.3f} / {gen['floor_other_' + name]:.3f} / "
                f"{gen['truth_' + name]:.3f}"
            )
        print("information    Z = 16 pixel patches: nHSIC / permutation floor / excess")
        for n in (128, args.num_examples):
            info = information_plane.evaluate_information(patches, batches, num_examples=n)
            for pair in ("xz_pooled", "zy_pooled", "zy_flat", "zn_flat", "xn"):
                print(
                    f"  n={n:4d} {pair:10s} {info['nhsic_' + pair]:.3f} / "
                    f"{info['floor_perm_nhsic_' + pair]:.3f} / {info['excess_nhsic_' + pair]:+.3f}"
                )
        print("probe          Z = 16 pixel patches, n = all: ridge R^2 / shuffled-target R^2")
        for pair in ("zy_pooled", "zy_flat", "zn_pooled", "zn_flat"):
            print(f"  {pair:10s} {info['probe_r2_' + pair]:.3f} / {info['floor_perm_probe_r2_' + pair]:.3f}")


if __name__ == "__main__":
    main()

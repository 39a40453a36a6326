"""Model-agnostic evaluation: understanding, oracle-scored generation, reconstruction, reports and grids.

Every evaluator takes plain callables, so any host (or a baseline) plugs in with a lambda:
  evaluate_understanding(answer_fn, batches, tokenizer)      answer_fn(images, question_tokens, max_len)
  evaluate_generation(generate_fn, batches, key, image_size)  generate_fn(caption_tokens, key) -> images
  evaluate_reconstruction(reconstruct_fn, batches)            reconstruct_fn(images) -> images
  evaluate_information(encode_fn, batches)                    encode_fn(images) -> z_BxNxD
`batches` is any iterable of numpy batch dicts (`infotok_jax.data.iterate_numpy`, or a mesh-less
`data.make_pipeline` with `max_batches`). Every score sits beside empirical floors (floor_*)
and references (ceiling_recon_*: the oracle on reconstructions, not an upper bound);
`report.evaluate_splits` runs them over several splits and
`report.write_report(out_dir, results)` writes metrics.json, metrics.md and the PNG grids (the evaluation
binary's plumbing).
"""

from infotok_jax.evaluate.generation import derangement, evaluate_generation
from infotok_jax.evaluate.grids import generation_grid, qa_grid
from infotok_jax.evaluate.information_plane import evaluate_information
from infotok_jax.evaluate.reconstruction import PSNR_CAP_DB, evaluate_reconstruction
from infotok_jax.evaluate.report import (
    evaluate_splits,
    flatten_metrics,
    markdown_table,
    to_json,
    write_report,
)
from infotok_jax.evaluate.understanding import chance_levels, evaluate_understanding, possible_answers

__all__ = [
    "PSNR_CAP_DB",
    "chance_levels",
    "derangement",
    "evaluate_generation",
    "evaluate_information",
    "evaluate_reconstruction",
    "evaluate_splits",
    "evaluate_understanding",
    "flatten_metrics",
    "generation_grid",
    "markdown_table",
    "possible_answers",
    "qa_grid",
    "to_json",
    "write_report",
]

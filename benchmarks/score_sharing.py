"""Scoring shared completions against full rows along a real run: loss and whole gradients.

Run by hand: `.venv/bin/python -m benchmarks.score_sharing [--seed 3] [--recipe w-reinforce]
[--every 25] [--steps N] [--train-with shared|reference] [--out FILE.jsonl]`. The run trains
as the lab does (`score_tokens`, a prompt's identical completions scored once);
`--train-with reference` follows the trajectory of scoring every row instead
(`share_copies=False`, how the lab trained before 2026-11-30: its loss matches those runs'
logs at every step, evaluations included). At every step the same batch is scored both
ways and, as a float-order control, with every row scored over the first and then the
second half of the prompts (the same sums in another order); each gives the recipe's loss
and the whole LoRA gradient, compared with the reference's (every row). Every `--every`
steps the same is done for every recipe on that step's rollout. One JSON line per step goes
to `--out`; a summary by stretch of steps is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

import core.engine.train as train_module
from core.config import build_config
from core.engine import rollout as shared_scoring
from core.engine.modeling import load_policy
from core.engine.recipes import RECIPES, Recipe, RecipeBatch
from core.engine.rollout import Rollout, TokenScores, span_confidence, with_rows
from core.runtime.store import RunStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--recipe", default="w-reinforce")
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--steps", type=int, default=None, help="default: the classic preset's")
    ap.add_argument("--train-with", choices=["shared", "reference"], default="shared",
                    help="whose scoring the run trains with (the comparisons are the same)")
    ap.add_argument("--out", type=Path, default=Path("score_sharing.jsonl"))
    args = ap.parse_args()
    full = partial(shared_scoring.score_tokens, share_copies=False)  # one row per completion
    shared = shared_scoring.score_tokens  # as the lab trains
    torch.set_num_threads(1)
    config = build_config("classic", recipe=args.recipe, seed=args.seed, threads=1,
                          steps=args.steps)
    loaded = load_policy(config)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    seen: dict = {}
    real_grade, real_select = train_module.grade, Rollout.select

    def grade(rollout, *rest):  # keeps the step's rollout and reading for the comparisons
        seen["rollout"], seen["graded"] = rollout, real_grade(rollout, *rest)
        return seen["graded"]

    def select(self, rows):  # keeps the rows the step scores
        seen["scored"], seen["rows"] = real_select(self, rows), rows
        return seen["scored"]

    def halves(model, rollout: Rollout, with_disparity: bool = False) -> TokenScores:
        first = torch.zeros(rollout.input_ids.shape[0], dtype=torch.bool)
        first[:rollout.input_ids.shape[0] // rollout.samples // 2 * rollout.samples] = True
        a, b = (full(model, rollout.select(m), with_disparity)
                for m in (first, ~first))
        return TokenScores(torch.cat([a.logprobs, b.logprobs]), None if a.disparity is None
                           else torch.cat([a.disparity, b.disparity]))

    def loss_and_grad(score, recipe: Recipe, batch: RecipeBatch, cfg, rollout: Rollout,
                      rows: torch.Tensor) -> tuple[float, torch.Tensor]:
        scores = score(loaded.model, rollout.select(rows), recipe.needs_span_confidence)
        b = replace(batch, old_logprobs=with_rows(batch.old_logprobs, rows,
                                                  scores.logprobs.detach()))
        if recipe.needs_span_confidence:
            b.span_confidence = span_confidence(scores.disparity, seen["graded"].answer_mask)
        b.logprobs = with_rows(b.old_logprobs, rows, scores.logprobs)
        loss = recipe.fn(b, cfg).loss
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = [(g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, params, strict=True)]
        return float(loss.detach()), torch.cat(flat)

    def compare(ref: tuple[float, torch.Tensor], other: tuple[float, torch.Tensor]) -> dict:
        diff = other[1] - ref[1]
        return {"loss_diff": other[0] - ref[0], "grad_norm": float(other[1].norm()),
                "grad_rel": float(diff.norm() / ref[1].norm().clamp(min=1e-30))}

    recipe = RECIPES[args.recipe]
    out = args.out.open("w")

    def comparing(batch: RecipeBatch, cfg):
        if batch.logprobs.grad_fn is None:  # rows_to_score's probe, not a training step
            return recipe.fn(batch, cfg)
        seen["step"] = seen.get("step", 0) + 1
        rollout, scored, rows = seen["rollout"], seen["scored"], seen["rows"]
        ref = loss_and_grad(full, recipe, batch, cfg, rollout, rows)
        rec = {"step": seen["step"], "rows": int(rows.sum()),
               "distinct": len(shared_scoring.distinct_completions(scored)[0]),
               "full/loss": ref[0], "full/grad_norm": float(ref[1].norm())}
        for name, score in (("shared", shared), ("halves", halves)):
            rec |= {f"{name}/{k}": v for k, v in compare(
                ref, loss_and_grad(score, recipe, batch, cfg, rollout, rows)).items()}
        if seen["step"] % args.every == 0 or seen["step"] == 1:
            rec |= _every_recipe(rollout, batch, cfg, loaded.model, full, shared,
                                 loss_and_grad, compare)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        return recipe.fn(batch, cfg)

    if args.train_with == "reference":
        train_module.score_tokens = full
    train_module.grade, Rollout.select = grade, select
    train_module.RECIPES = {**RECIPES, args.recipe: Recipe(recipe.info, comparing)}
    writer = RunStore(Path(tempfile.mkdtemp(prefix="score-sharing-"))).create(config)
    t0 = time.process_time()
    status = train_module.train(config, writer, loaded=loaded, threads=lambda: 1)
    out.close()
    print(f"{status}; {time.process_time() - t0:.0f} CPU s; per step in {args.out}; "
          f"the run in {writer.path}")
    summarize([json.loads(line) for line in args.out.open()])


def _every_recipe(rollout: Rollout, batch: RecipeBatch, cfg, model, full, shared,
                  loss_and_grad, compare) -> dict:
    rec = {}
    for name, recipe in RECIPES.items():
        c = replace(cfg, recipe=name)
        b = replace(batch)
        if recipe.needs_reference(c):
            with torch.no_grad(), model.disable_adapter():
                b.ref_logprobs = full(model, rollout).logprobs
        rows = recipe.rows_to_score(b, c)
        ref = loss_and_grad(full, recipe, b, c, rollout, rows)
        rec |= {f"recipe/{name}/{k}": v for k, v in compare(
            ref, loss_and_grad(shared, recipe, b, c, rollout, rows)).items()}
        rec[f"recipe/{name}/distinct_share"] = (
            len(shared_scoring.distinct_completions(rollout.select(rows))[0]) / int(rows.sum()))
    return rec


def summarize(records: list[dict]) -> None:
    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.1e}, max {max(xs):.1e}"

    for lo in range(1, records[-1]["step"] + 1, 100):
        part = [r for r in records if lo <= r["step"] < lo + 100]
        print(f"steps {lo}-{part[-1]['step']}: distinct rows "
              f"{statistics.mean(r['distinct'] / r['rows'] for r in part):.2f}")
        for name in ("shared", "halves"):
            print(f"  {name}: |loss diff| max {max(abs(r[name + '/loss_diff']) for r in part):.1e}"
                  f"; grad rel. diff {spread([r[name + '/grad_rel'] for r in part])}")
    checked = [r for r in records if any(k.startswith("recipe/") for k in r)]
    for name in RECIPES:
        rel = [r[f"recipe/{name}/grad_rel"] for r in checked]
        print(f"{name} ({len(checked)} steps): |loss diff| max "
              f"{max(abs(r[f'recipe/{name}/loss_diff']) for r in checked):.1e}; grad rel. diff "
              f"{spread(rel)}")


if __name__ == "__main__":
    main()

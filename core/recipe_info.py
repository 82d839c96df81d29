"""What each reward recipe is, for people: names, one-line summaries and formulas.

Light on purpose (no torch), so the app can show it. `core.engine.recipes` attaches the loss
functions to these entries; the two must name the same recipes (checked at import).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecipeInfo:
    summary: str  # one line for the app
    formula: str  # LaTeX, rendered by the app
    uses_labels: bool = True  # False: needs no right/wrong grading to train
    needs_span_confidence: bool = False  # ranks samples by answer-span confidence


RECIPE_INFO: dict[str, RecipeInfo] = {
    "binary": RecipeInfo("RLVR: reward 1 if right, 0 if wrong; GRPO group baseline.",
                         r"r = c,\quad A_i = r_i - \overline{r}_{\text{group}}"),
    "rlcr": RecipeInfo("Correctness plus a Brier score on the stated confidence (RLCR); "
                       "a format failure gets -2.",
                       r"r = c - (q - c)^2,\quad A_i = r_i - \overline{r}_{\text{group}}"),
    "psr": RecipeInfo("Train only on right samples: log-likelihood on the model's own hits.",
                      r"A = +1 \text{ if } c = 1,\ \text{no update if } c = 0"),
    "nsr": RecipeInfo("Train only on wrong samples: push probability away from misses.",
                      r"A = -1 \text{ if } c = 0,\ \text{no update if } c = 1"),
    "w-reinforce": RecipeInfo("Both, with positives down-weighted by lambda (0.1 default).",
                              r"A = +\lambda \text{ if } c = 1,\ A = -1 \text{ if } c = 0"),
    "rlsf": RecipeInfo("No labels: DPO on pairs ranked by the model's answer-span confidence "
                       "(RLSF); reference = adapter off.",
                       r"\mathcal{L} = -\log\sigma\big(\beta[h_i - h_j]\big),\ "
                       r"h = \log\tfrac{\pi}{\pi_{\text{ref}}},\ s_i > s_j,\ s_i \ge \tau",
                       uses_labels=False, needs_span_confidence=True),
}

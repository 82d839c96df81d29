"""The chat path on CPU with tiny random Qwen2 and Llama models built here (nothing is
downloaded): chat template, RLCR tags, grading, LoRA targets, training and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.cli import main
from core.config import build_config
from core.data.formats import SYSTEM_DIRECT, TagFormat
from core.data.task_data import load_task
from core.data.tasks import Example
from core.engine.modeling import load_policy
from core.engine.recipes import RECIPES, RecipeBatch
from core.engine.rollout import (
    Rollout,
    grade,
    join_rollouts,
    sample,
    sample_in_slices,
    score_tokens,
)
from core.engine.train import train
from core.metrics import SIGNALS, raw_half, recalibrated
from core.runtime.store import RunStore
from tools.tiny_chat import write_arithmetic_qa, write_chat_model

ARCHS = ("qwen2", "llama")
LORA_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat-models")
    return {arch: write_chat_model(root / arch, arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arithmetic_qa(tmp_path_factory.mktemp("qa") / "qa.jsonl", rows=160)


def small(model: Path, qa: Path, **kw):
    """A config small enough for a few seconds on one CPU thread."""
    values = {"model": str(model), "task": str(qa), "threads": 1, "prompts_per_step": 2,
              "group_size": 2, "max_new_tokens": 12, "eval_prompts": 3, "eval_samples": 2,
              "steps": 1, "eval_every": 1, "keep_samples": 4}
    return build_config(**{**values, **kw})


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_system_prompt_and_one_bos(models, qa_file, arch):
    loaded = load_policy(small(models[arch], qa_file))
    fmt, tok = loaded.prompt_format, loaded.tokenizer
    assert isinstance(fmt, TagFormat)
    text = fmt.prompt(Example("What is 2 + 2?", "4"))
    assert "<answer>" in text and "<confidence>" in text and "What is 2 + 2?" in text
    ids = tok(text)["input_ids"]
    if arch == "llama":  # the template writes BOS, the tokenizer adds it: only one survives
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert text.startswith("<|start_header_id|>system")
    else:
        assert text.startswith("<|im_start|>system") and tok.bos_token_id is None
    assert text.endswith(("<|im_start|>assistant\n",
                          "<|start_header_id|>assistant<|end_header_id|>\n\n"))


def test_reasoning_off_reaches_the_template(models, qa_file):
    loaded = load_policy(small(models["qwen2"], qa_file, reasoning=False))
    text = loaded.prompt_format.prompt(Example("q?", "1"))
    assert SYSTEM_DIRECT in text
    assert text.endswith("<think>\n\n</think>\n\n")  # Qwen3-style enable_thinking=False


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_covers_every_linear_of_every_layer(models, qa_file, arch):
    loaded = load_policy(small(models[arch], qa_file))
    wrapped = {n.split(".")[-1] for n, m in loaded.model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == LORA_TARGETS
    per_layer = {n.split(".layers.")[1].split(".")[0] for n, m in loaded.model.named_modules()
                 if hasattr(m, "lora_A")}
    assert per_layer == {"0", "1"}
    assert not any("lm_head" in n for n, p in loaded.model.named_parameters()
                   if p.requires_grad)


def _scripted(tok, completions: list[str], examples: list[Example]) -> Rollout:
    """A rollout of given completions (each ending with the model's EOS)."""
    rows = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for c in completions]
    t = max(map(len, rows))
    comp = torch.full((len(rows), t), tok.pad_token_id)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        comp[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    prompt = torch.full((len(rows), 3), tok.eos_token_id)
    return Rollout(examples, torch.cat([prompt, comp], 1),
                   torch.cat([torch.ones_like(prompt), mask], 1), mask, 3, completions)


@pytest.mark.parametrize("arch", ARCHS)
def test_tags_grade_and_credit_the_right_tokens(models, qa_file, arch):
    loaded = load_policy(small(models[arch], qa_file))
    tok, fmt = loaded.tokenizer, loaded.prompt_format
    task = load_task(small(models[arch], qa_file))
    ex = Example("What is 2 + 3?", "5")
    completions = ["<think>2+3</think><answer>5</answer><confidence>0.9</confidence>",
                   "<answer>6</answer><confidence>80%</confidence>",
                   "<answer>5</answer><confidence>1.7</confidence>",
                   "<think>hmm</think>no tags"]
    rollout = _scripted(tok, completions, [ex] * 4)
    g = grade(rollout, fmt, task, tok)
    assert g.answers == ["5", "6", "5", None]
    assert g.correct.tolist() == [1.0, 0.0, 0.0, 0.0]  # a format failure is never correct
    assert g.well_formed.tolist() == [True, True, False, False]
    assert g.confidence[:2].tolist() == pytest.approx([0.9, 0.8])
    ids = rollout.completion_ids

    def tokens(row: int, mask: torch.Tensor) -> str:
        return tok.decode(ids[row][mask[row].bool()])

    assert tokens(0, g.answer_mask) == "5" and tokens(0, g.confidence_mask) == "0.9"
    assert tokens(1, g.confidence_mask) == "80%"
    assert g.confidence_mask[2].sum() == 0 and g.answer_mask[3].sum() == 0
    # rlcr's reward-to-go: confidence tokens carry the Brier advantage, the rest the reward's.
    logprobs = torch.zeros(ids.shape, requires_grad=True)
    batch = RecipeBatch(logprobs=logprobs, old_logprobs=logprobs.detach(),
                        mask=rollout.completion_mask.float(), correct=g.correct,
                        confidence=g.confidence, well_formed=g.well_formed, group_size=2,
                        confidence_mask=g.confidence_mask)
    result = RECIPES["rlcr"].fn(batch, small(models[arch], qa_file, recipe="rlcr"))
    assert result.rewards.tolist() == pytest.approx([1 - 0.01, -0.64, -2.0, -2.0])
    result.loss.backward()
    assert logprobs.grad[0][g.answer_mask[0].bool()].ne(0).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_the_cli_trains_rlcr_on_a_task_file_end_to_end(models, qa_file, arch, tmp_path, capsys):
    """`python -m core train --model FOLDER --task FILE.jsonl --recipe rlcr`, in process."""
    runs = tmp_path / "runs"
    flags = {"--model": models[arch], "--task": qa_file, "--recipe": "rlcr", "--steps": 2,
             "--threads": 1, "--prompts-per-step": 2, "--group-size": 2,
             "--max-new-tokens": 12, "--eval-prompts": 3, "--eval-samples": 2,
             "--eval-every": 1, "--generation-batch-size": 2, "--runs-dir": runs}
    assert main(["train", *(str(x) for kv in flags.items() for x in kv)]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    record = RunStore(runs).load(run_id)
    assert (record.status, [t["step"] for t in record.train]) == ("finished", [1, 2])
    assert [e["step"] for e in record.evals] == [0, 1, 2]
    assert 0.0 <= record.evals[-1]["format_rate"] <= 1.0
    assert set(record.evals[-1]["calibration"]) == {
        entry for s in SIGNALS for entry in (s, recalibrated(s), raw_half(s))}
    assert Path(record.config["task"]).parent == (runs / "datasets").resolve()  # pinned
    samples = RunStore(runs).samples(run_id)
    assert samples and "<answer>" in samples[0]["prompt"]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_training_step_moves_lora_with_gradient_checkpointing(models, qa_file, arch,
                                                                tmp_path):
    config = small(models[arch], qa_file, recipe="nsr", no_eval=True,
                   gradient_checkpointing=True)
    loaded = load_policy(config)
    layers = [m for m in loaded.model.modules() if type(m).__name__.endswith("DecoderLayer")]
    assert len(layers) == 2 and all(m.gradient_checkpointing and m.training for m in layers)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    assert train(config, RunStore(tmp_path).create(config), loaded=loaded) == "finished"
    after = dict(loaded.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)


def test_checkpointing_gives_the_same_gradients(models, qa_file):
    """Recomputing activations changes memory, not the maths."""
    grads, mlp_calls = [], []
    for ckpt in (False, True):
        loaded = load_policy(small(models["qwen2"], qa_file, gradient_checkpointing=ckpt))
        torch.manual_seed(0)
        r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format,
                   [Example("What is 1 + 1?", "2")], 2, 1.0, 6)
        calls = []
        mlp = next(m for n, m in loaded.model.named_modules() if n.endswith("layers.0.mlp"))
        forward = mlp.forward  # counted by wrapping: the recompute skips module hooks

        def counted(*args, forward=forward, calls=calls, **kwargs):
            calls.append(1)
            return forward(*args, **kwargs)

        mlp.forward = counted
        logprobs = score_tokens(loaded.model, r).logprobs
        in_forward = len(calls)
        logprobs.sum().backward()
        mlp_calls.append((in_forward, len(calls) - in_forward))
        grads.append({n: p.grad.clone() for n, p in loaded.model.named_parameters()
                      if p.grad is not None})
    # (calls in the forward pass, calls in the backward pass). Unchecked: two forward passes
    # (the shared prompt, then the completions). Checkpointed: one pass over full rows (a
    # re-run must not grow the shared cache), which the backward pass runs again.
    assert mlp_calls == [(2, 0), (1, 1)]
    assert grads[0].keys() == grads[1].keys() and grads[0]
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_sampling_in_slices_joins_into_one_rollout(models, qa_file):
    loaded = load_policy(small(models["qwen2"], qa_file))
    m, tok, fmt = loaded.model, loaded.tokenizer, loaded.prompt_format
    examples = [Example("What is 1 + 1?", "2"), Example("What is 12345 + 67890?", "80235"),
                Example("Hi?", "x")]
    torch.manual_seed(0)
    whole = sample_in_slices(m, tok, fmt, examples, 2, 1.0, 8, max_rows=2)  # 3 calls
    assert len(whole.texts) == 6 and whole.examples[::2] == examples
    assert whole.input_ids.shape[1] == whole.prompt_width + whole.completion_ids.shape[1]
    with torch.inference_mode():
        joined = score_tokens(m, whole).logprobs  # [6, T]
        parts = [Rollout(whole.examples[i:i + 2], *(x[i:i + 2] for x in (
            whole.input_ids, whole.attention_mask, whole.completion_mask)),
            whole.prompt_width, whole.texts[i:i + 2]) for i in (0, 2, 4)]
        alone = torch.cat([score_tokens(m, p).logprobs for p in parts])
    mask = whole.completion_mask.bool()
    assert torch.allclose(joined[mask], alone[mask], atol=1e-4)
    again = join_rollouts(parts, tok.pad_token_id)
    assert torch.equal(again.input_ids, whole.input_ids)


def test_the_file_task_split_is_what_training_sees(qa_file):
    task = load_task(build_config(task=str(qa_file)))
    batch = task.train_batch(np.random.default_rng(0), 4)
    assert all(ex in task.train for ex in batch)
    assert not set(task.held_out) & set(task.train)

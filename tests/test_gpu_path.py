"""What a CUDA run needs, checked on the CPU: the chunked LM head, generation sliced by KV-cache
memory, the chat preset's reasoning default, truncation and sampler-gap metrics, masks on a
byte-level BPE tokenizer, bf16 without emulation, the GPU run cap and resuming on fewer GPUs.
(Device mixes: tests/test_device_mix.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from core import charts
from core.config import RunConfig, build_config
from core.data.formats import TagFormat
from core.data.task_data import load_task
from core.data.tasks import TASKS, Example
from core.engine import rollout as rollout_module
from core.engine.checkpoint import cuda_rng_state
from core.engine.modeling import load_policy, model_dtype
from core.engine.rollout import (
    Rollout,
    grade,
    head_logprobs,
    kv_bytes_per_token,
    position_ids,
    rows_within,
    sample,
    sample_in_slices,
    sampler_gap,
    score_tokens,
)
from core.engine.train import train
from core.runtime import slots
from core.runtime.store import RunStore
from tools.tiny_chat import write_arithmetic_qa, write_chat_model


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chat_model(tmp_path_factory.mktemp("chat") / "qwen2", "qwen2")


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_arithmetic_qa(tmp_path_factory.mktemp("qa") / "qa.jsonl", rows=80)


def chat_config(model: Path, qa: Path, **kw) -> RunConfig:
    values = {"model": str(model), "task": str(qa), "threads": 1, "prompts_per_step": 2,
              "group_size": 2, "max_new_tokens": 8, "eval_prompts": 2, "eval_samples": 2,
              "steps": 1, "eval_every": 1, "keep_samples": 2}
    return build_config(**{**values, **kw})


# --- the LM head in chunks -------------------------------------------------------------------

def test_chunked_head_logprobs_equal_log_softmax_with_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 8, generator=g, requires_grad=True)  # [N, H]
    weight = torch.randn(50, 8, generator=g) * 3  # [V, H]: large logits
    bias = torch.randn(50, generator=g)
    y = torch.randint(0, 50, (37,), generator=g)
    logp = torch.log_softmax(F.linear(hidden, weight, bias), -1)  # [N, V] the textbook way
    expected = logp.gather(1, y[:, None]).squeeze(1)
    (expected_grad,) = torch.autograd.grad((expected * torch.arange(37.0)).sum(), hidden)
    top2 = logp.detach().topk(2, -1)
    other = torch.where(top2.indices[:, 0] == y, top2.values[:, 1], top2.values[:, 0])
    for chunk_bytes in (4 * 50 * 5, 4 * 50 * 37):  # chunks of 5 tokens (checkpointed), one
        got, disparity = head_logprobs(hidden, weight, bias, y, True, chunk_bytes)
        (grad,) = torch.autograd.grad((got * torch.arange(37.0)).sum(), hidden)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(grad, expected_grad, atol=1e-4, rtol=1e-4)  # float32 sums
        assert torch.allclose(disparity, expected.detach().exp() - other.exp(), atol=1e-6)


def test_scoring_in_chunks_under_checkpointing_equals_full_logits(chat_model, qa_file,
                                                                  monkeypatch) -> None:
    """Checkpointed layers and a chunked head: the same log-probs and LoRA gradients as the
    textbook pass over full rows with the whole [B, T, V] log-softmax."""
    loaded = load_policy(chat_config(chat_model, qa_file, gradient_checkpointing=True))
    vocab = loaded.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(rollout_module, "LOGITS_CHUNK_BYTES", 4 * vocab * 3)  # 3 tokens
    with torch.no_grad():  # a LoRA that is not zero, so its gradients are not trivial
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    torch.manual_seed(0)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format,
               [Example("What is 1 + 1?", "2"), Example("What is 22 + 7?", "29")], 2, 1.0, 8)
    params = [p for p in loaded.model.parameters() if p.requires_grad]

    def textbook() -> torch.Tensor:
        t = r.completion_ids.shape[1]
        out = loaded.model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                           position_ids=position_ids(r.attention_mask), logits_to_keep=t + 1)
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)  # [B, T, V]
        return logp.gather(-1, r.completion_ids.unsqueeze(-1)).squeeze(-1)

    results = []
    for score in (textbook, lambda: score_tokens(loaded.model, r).logprobs):
        lp = score()
        (lp * r.completion_mask).sum().backward()
        results.append((lp.detach(), [p.grad.clone() for p in params]))
        loaded.model.zero_grad(set_to_none=True)
    (full, full_grads), (chunked, chunked_grads) = results
    mask = r.completion_mask.bool()
    assert mask.sum() > 6  # more than two chunks
    assert torch.allclose(full[mask], chunked[mask], atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4)
               for a, b in zip(full_grads, chunked_grads, strict=True))


# --- generation: sliced by KV-cache bytes, finished checked every few steps -------------------

def test_rows_within_a_kv_budget_are_whole_prompts() -> None:
    assert rows_within(budget=1000, bytes_per_row=100, rows=64, samples=4) == 8  # 10 -> 8
    assert rows_within(budget=1000, bytes_per_row=100, rows=6, samples=2) == 6  # all fit
    assert rows_within(budget=10, bytes_per_row=100, rows=64, samples=4) == 4  # one prompt


def test_kv_bytes_per_token_counts_keys_and_values_of_every_layer() -> None:
    loaded = load_policy(RunConfig(threads=1))
    c = loaded.model.config  # the embedded model: 4 layers, 4 KV heads of 32, float32
    assert kv_bytes_per_token(loaded.model) == 2 * 4 * 4 * 32 * 4 == 2 * c.num_hidden_layers \
        * c.num_key_value_heads * c.head_dim * 4


def test_sampling_slices_follow_the_kv_budget(monkeypatch) -> None:
    loaded = load_policy(RunConfig(threads=1))
    examples = TASKS["add"].eval_set(6)
    widest = max(len(loaded.tokenizer(loaded.prompt_format.prompt(e))["input_ids"])
                 for e in examples)
    per_row = kv_bytes_per_token(loaded.model) * (widest + 5)
    monkeypatch.setattr(rollout_module, "KV_CACHE_BUDGET_CPU", per_row * 9)  # 9 rows: 2 prompts
    calls = []
    real = rollout_module.sample

    def counted(model, tokenizer, fmt, exs, *args, **kwargs):
        calls.append(len(exs))
        return real(model, tokenizer, fmt, exs, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "sample", counted)
    r = sample_in_slices(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, 4,
                         1.0, 5, max_rows=0)
    assert calls == [2, 2, 2] and len(r.texts) == 24
    calls.clear()
    sample_in_slices(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, 4, 1.0, 5,
                     max_rows=4)  # a row limit below the budget's still applies
    assert calls == [1] * 6


@pytest.mark.parametrize(("samples", "temperature"), [(1, None), (4, 1.0)])
def test_checking_finished_every_few_steps_gives_the_same_rollout(monkeypatch, samples,
                                                                   temperature) -> None:
    """Greedy, or sampled with the same seed (every step draws for every row either way):
    regrouping the rows by prefix every step or only at a late read gives the same rows."""
    loaded = load_policy(RunConfig(threads=1))
    examples = TASKS["add"].eval_set(5)
    assert rollout_module.finished_check_every(torch.device("cpu")) == 1
    assert rollout_module.finished_check_every(torch.device("cuda")) == 8
    torch.manual_seed(0)
    every_step = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, examples,
                        samples, temperature, 16)
    monkeypatch.setattr(rollout_module, "finished_check_every", lambda device: 16)
    torch.manual_seed(0)
    late = sample(loaded.model, loaded.tokenizer, loaded.prompt_format, examples, samples,
                  temperature, 16)
    assert every_step.completion_mask.shape[1] < 16  # decoding went on after every row ended
    assert torch.equal(late.input_ids, every_step.input_ids)
    assert torch.equal(late.completion_mask, every_step.completion_mask)
    assert torch.allclose(late.logprobs, every_step.logprobs)
    assert late.texts == every_step.texts


# --- reasoning default and the truncation rate -----------------------------------------------

def test_the_chat_preset_turns_reasoning_and_qwen3_thinking_off(chat_model, qa_file) -> None:
    config = build_config("chat", model=str(chat_model), task=str(qa_file))
    assert config.reasoning is False and config.generation_batch_size == 0
    loaded = load_policy(config)  # a Qwen-style template with Qwen3's enable_thinking switch
    prompt = loaded.prompt_format.prompt(Example("What is 1 + 1?", "2"))
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_truncation_is_a_completion_cut_before_it_ended(chat_model, qa_file) -> None:
    loaded = load_policy(chat_config(chat_model, qa_file))
    eos = loaded.tokenizer.eos_token_id
    torch.manual_seed(0)
    r = sample(loaded.model, loaded.tokenizer, loaded.prompt_format,
               [Example(f"What is {i} + 1?", str(i + 1)) for i in range(8)], 4, 3.0, 3)
    ended = [eos in row.tolist() for row in r.completion_ids]
    assert r.truncated.tolist() == [not e for e in ended]
    assert r.truncation_rate == pytest.approx(1 - sum(ended) / len(ended))


def test_truncation_and_sampler_gap_are_logged_every_step_and_evaluation(tmp_path) -> None:
    config = build_config("smoke", steps=2, eval_every=1, threads=1, max_new_tokens=3)
    store = RunStore(tmp_path)
    writer = store.create(config)
    assert train(config, writer) == "finished"
    record = store.load(writer.run_id)
    # 3 tokens are too few for the embedded model's answers ("1234;C7" and EOS): all cut.
    assert [t["truncation_rate"] for t in record.train] == [1.0, 1.0]
    assert [e["truncation_rate"] for e in record.evals] == [1.0, 1.0, 1.0]
    # float32 merged sampler vs the policy: rounding only
    assert all(0 <= t["sampler_logprob_gap"] < 1e-4 for t in record.train)
    fig = charts.truncation(record.train, record.evals)
    assert [list(tr.y) for tr in fig.data] == [[1.0, 1.0], [1.0, 1.0, 1.0]]


def test_sampler_gap_is_the_mean_absolute_difference_on_completion_tokens() -> None:
    sampled = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]])
    scored = torch.tensor([[-1.5, -2.0, 0.0], [-0.5, -0.25, -0.5]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert sampler_gap(sampled, scored, mask) == pytest.approx((0.5 + 0 + 0 + 0.25 + 0) / 5)


# --- masks on a byte-level BPE tokenizer -----------------------------------------------------

def byte_level_bpe() -> PreTrainedTokenizerFast:
    """A small byte-level BPE (Qwen's and GPT-2's scheme): with few merges, characters of two
    to four bytes are split over tokens that decode alone to U+FFFD."""
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["<answer>42</answer><confidence>0.5</confidence> thinking"] * 20,
                           trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def test_answer_and_confidence_masks_on_byte_level_bpe_with_non_ascii_text(qa_file) -> None:
    tok = byte_level_bpe()
    completion = ("<think>Größe ≈ 日本 — 12 € 🙂</think><answer>5 €</answer>"
                  "<confidence>0.9</confidence>")
    ids = tok(completion)["input_ids"] + [tok.eos_token_id]
    assert any("\ufffd" in tok.decode([i]) for i in ids), "no split character: a weak test"
    assert tok.decode(ids, skip_special_tokens=True) == completion
    comp = torch.tensor([ids])
    mask = torch.ones_like(comp)
    prompt = torch.full((1, 2), tok.eos_token_id)
    r = Rollout([Example("What is 2 + 3?", "5 €")], torch.cat([prompt, comp], 1),
                torch.cat([torch.ones_like(prompt), mask], 1), mask, 2, [completion])
    g = grade(r, TagFormat(), load_task(build_config(task=str(qa_file))), tok)
    assert tok.decode(comp[0][g.answer_mask[0].bool()]) == "5 €"
    assert tok.decode(comp[0][g.confidence_mask[0].bool()]) == "0.9"


# --- bf16, the GPU run cap, resuming on fewer GPUs -------------------------------------------

@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, native, expected) -> None:
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or including_emulation  # a T4 answers True only with emulation counted

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert model_dtype(torch.device("cuda")) == expected
    assert model_dtype(torch.device("cpu")) == torch.float32


def test_the_gpu_cap_follows_gpu_count_and_memory_against_the_estimate() -> None:
    from core.models.model_catalog import run_estimate

    config = build_config("chat", model="Qwen/Qwen2.5-0.5B-Instruct")
    need = run_estimate(config, "cuda").total
    gb80, gb24 = 80e9, 24e9
    assert slots.gpu_cap([slots.Gpu("0", gb80)], config) == int(0.9 * gb80 // need)
    assert slots.gpu_cap([slots.Gpu("0", gb80), slots.Gpu("1", gb80)], config) \
        == 2 * int(0.9 * gb80 // need)
    # mixed cards: every GPU as many as the smallest holds, and never below one run
    assert slots.gpu_cap([slots.Gpu("0", gb80), slots.Gpu("1", gb24)], config) \
        == max(1, 2 * int(0.9 * gb24 // need))
    assert slots.gpu_cap([slots.Gpu("0", need / 2)], config) == 1
    gpus = [slots.Gpu("3", gb80), slots.Gpu("5", gb80)]
    assert [slots.gpu_for_slot(i, gpus) for i in range(4)] == ["3", "5", "3", "5"]


def test_max_runs_on_a_gpu_machine_uses_the_gpu_cap(monkeypatch) -> None:
    monkeypatch.delenv(slots.MAX_RUNS_ENV, raising=False)
    monkeypatch.setattr(slots, "visible_gpus", lambda: [slots.Gpu("0", 24e9)])
    chat = build_config("chat", model="Qwen/Qwen2.5-0.5B-Instruct")
    assert slots.max_runs(chat) == slots.gpu_cap([slots.Gpu("0", 24e9)], chat)
    cpu_cap = os.cpu_count() or 1
    assert slots.max_runs(chat.replace(device="cpu")) == cpu_cap  # a CPU run: one per core
    assert slots.max_runs() == cpu_cap  # no run to size
    monkeypatch.setattr(slots, "visible_gpus", lambda: [])
    assert slots.max_runs(chat) == cpu_cap  # no GPU
    monkeypatch.setenv(slots.MAX_RUNS_ENV, "3")
    assert slots.max_runs(chat) == 3  # the setting wins


def test_visible_gpus_read_nvidia_smi_and_respect_cuda_visible_devices(monkeypatch) -> None:
    class Done:
        stdout = "0, 81559\n1, 81559\n2, 24576\n"

    monkeypatch.setattr(slots.subprocess, "run", lambda *a, **k: Done())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    assert slots.visible_gpus() == [slots.Gpu("2", 24576 * 2**20), slots.Gpu("0", 81559 * 2**20)]

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(slots.subprocess, "run", missing)
    assert slots.visible_gpus() == []




def test_a_checkpoint_from_a_machine_with_more_gpus_restores_on_fewer() -> None:
    one, two = torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)
    assert cuda_rng_state(one, 0) is one  # this format: the run's own GPU only
    assert cuda_rng_state([one, two], 1) is two  # earlier format, the same GPU exists
    assert cuda_rng_state([one, two], 3) is one  # ... and where it does not


def test_a_model_whose_logits_are_capped_is_refused_not_scored_wrongly(chat_model) -> None:
    from transformers import AutoModelForCausalLM

    from core.engine.modeling import check_plain_lm_head
    from core.models.model_source import ModelError

    model = AutoModelForCausalLM.from_pretrained(chat_model)
    check_plain_lm_head(model, "plain")  # Qwen2's head: fine
    model.config.final_logit_softcapping = 30.0  # as Gemma 2 sets it
    with pytest.raises(ModelError, match="final_logit_softcapping"):
        check_plain_lm_head(model, "capped")

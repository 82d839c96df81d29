"""Generation on merged weights (core.engine.modeling: `merge_into`, `_merged_sampler`): the
same policy as the LoRA layers up to float rounding, the base untouched, bf16 rounded once,
and a fallback to the LoRA layers wherever a merge would not be exact or would not fit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from stand_in_cuda import CUDA, StandInCuda, on_gpu
from test_rollout import trained_looking_policy

from core.config import RunConfig, build_config
from core.data.tasks import TASKS
from core.engine import modeling
from core.engine.modeling import LoadedModel, load_policy, lora_factors, merge_into

IDS = torch.tensor([[1, 5, 6, 14, 7, 8, 17], [1, 9, 3, 14, 4, 4, 17]])  # two compact prompts


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits  # [2, 7, V]


def _base_weights(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_" not in n}


def test_merged_decode_logits_match_the_lora_layers() -> None:
    loaded = trained_looking_policy()
    policy = _logits(loaded.model)
    with loaded.model.disable_adapter():
        base = _logits(loaded.model)
    merged = _logits(loaded.sampling_model())
    assert (policy - base).abs().max() > 1e-2  # the adapter matters, so the match says something
    assert torch.allclose(merged, policy, atol=1e-5, rtol=0)


def test_each_merged_weight_is_the_base_plus_peft_s_delta() -> None:
    loaded = trained_looking_policy()
    loaded.sampling_model()
    assert len(loaded.merge_pairs) == 28  # 4 layers x 7 linears: every adapted layer merged
    with torch.no_grad():
        for plain, lora in loaded.merge_pairs:
            expected = lora.base_layer.weight + lora.get_delta_weight("default")
            assert torch.allclose(plain.weight, expected, atol=1e-6, rtol=0)


def test_sampled_tokens_are_those_of_the_lora_layers_for_the_same_seed() -> None:
    """Same seed, same draws: the merged copy's logits differ by rounding only, so no sampled
    token changes (64 prompts x 4 samples x up to 10 tokens), and the kept log-probs agree
    (largest difference measured: 1.05e-5, a log-softmax over logits that differ by < 1e-5)."""
    from core.engine.rollout import sample

    loaded = trained_looking_policy()
    examples = TASKS["add"].eval_set(64)
    runs = []
    for model in (loaded.sampling_model(), loaded.model):
        torch.manual_seed(5)
        runs.append(sample(model, loaded.tokenizer, loaded.prompt_format, examples, 4, 1.0, 10))
    merged, lora = runs
    assert torch.equal(merged.input_ids, lora.input_ids)
    assert torch.allclose(merged.logprobs, lora.logprobs, atol=5e-5, rtol=0)
    assert torch.allclose(merged.entropy, lora.entropy, atol=5e-5, rtol=0)


def test_evaluation_signals_from_merged_weights_differ_by_rounding_only() -> None:
    """Evaluation decodes with the merged copy; its answers and confidence signals (answer
    probability, verbalized, consistency) are those of the LoRA layers up to float noise."""
    from core.engine.evaluate import evaluate

    loaded = trained_looking_policy()
    config = RunConfig(threads=1, eval_prompts=32, eval_samples=4)
    examples = TASKS["add"].eval_set(config.eval_prompts)
    merged, lora = (evaluate(m, loaded.tokenizer, loaded.prompt_format, TASKS["add"], examples,
                             config, 0) for m in (loaded.sampling_model(), loaded.model))
    assert [s["completion"] for s in merged.samples] == [s["completion"] for s in lora.samples]

    def numbers(tree: object, prefix: str = "") -> dict[str, float]:
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{prefix}/{key}")
                    .items()}
        return {prefix: float(tree)} if isinstance(tree, int | float) else {}

    a, b = numbers(merged.metrics), numbers(lora.metrics)
    assert a.keys() == b.keys() and any("answer_prob" in k for k in a)
    assert all(a[k] == pytest.approx(b[k], abs=1e-5, nan_ok=True) for k in a)


def test_training_with_merged_decoding_leaves_the_base_bit_for_bit(tmp_path: Path) -> None:
    from core.engine.train import train
    from core.runtime.store import RunStore

    config = build_config("smoke", steps=2, threads=1, eval_prompts=4, eval_samples=2)
    loaded = load_policy(config)
    before = _base_weights(loaded)
    assert loaded.sampler is not None
    store = RunStore(tmp_path)
    assert train(config, store.create(config), loaded=loaded) == "finished"
    after = _base_weights(loaded)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    # The merged copies moved with the adapter, away from the base they are rebuilt from.
    plain, lora = loaded.merge_pairs[0]
    assert not torch.equal(plain.weight, lora.base_layer.weight)


def _one_layer(module: torch.nn.Module, targets: list[str], **lora: object) -> torch.nn.Module:
    """A one-layer model with a non-zero LoRA adapter on `targets`."""
    peft = get_peft_model(module, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                             **lora))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return peft


class _Net(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


@pytest.mark.parametrize("kind", ["linear", "conv1d", "embedding"])
def test_the_merged_layer_computes_what_the_lora_layer_does(kind: str) -> None:
    """nn.Linear, GPT-2's Conv1D (weight [in, out], peft's fan_in_fan_out) and an embedding:
    the plain layer with the merged weight gives the LoRA layer's output."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    layer = {"linear": lambda: torch.nn.Linear(6, 5, bias=True),
             "conv1d": lambda: Conv1D(5, 6),
             "embedding": lambda: torch.nn.Embedding(7, 5)}[kind]()
    plain = _Net(layer)
    x = torch.tensor([[0, 3, 6]]) if kind == "embedding" else torch.randn(3, 6)
    merged = copy.deepcopy(plain)
    peft = _one_layer(plain, ["layer"], fan_in_fan_out=kind == "conv1d")
    lora = peft.get_base_model().layer
    assert lora_factors(lora) is not None
    with torch.no_grad():
        merge_into(merged.layer.weight, lora)
        assert torch.allclose(merged(x), peft(x), atol=1e-6, rtol=0)
        with peft.disable_adapter():
            assert not torch.allclose(merged(x), peft(x), atol=1e-3)


def test_layers_that_cannot_be_merged_exactly_sample_through_lora(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DoRA rescales each column by its norm: not W + s B A, so no merged copy is made and
    generation uses the policy itself, with the reason kept for the run's log."""
    dora = _one_layer(_Net(torch.nn.Linear(6, 5)), ["layer"], use_dora=True)
    assert lora_factors(dora.get_base_model().layer) is None
    real = modeling.lora_config
    monkeypatch.setattr(modeling, "lora_config",
                        lambda config: LoraConfig(**{**real(config).to_dict(), "use_dora": True}))
    loaded = load_policy(RunConfig(threads=1))
    assert loaded.sampler is None and loaded.sampling_model() is loaded.model
    assert "cannot be merged exactly" in loaded.sampler_note


def test_merge_on_a_stand_in_gpu_in_bf16_rounds_once() -> None:
    """On CUDA the base is bf16 and the adapter float32: the merged weight is W + s B A
    rounded to bf16 once, on the GPU. Three bf16 roundings (B A, times s, plus W) would
    differ from it, which this layer shows."""
    torch.manual_seed(0)
    peft = _one_layer(_Net(torch.nn.Linear(64, 48, bias=False).to(torch.bfloat16)), ["layer"])
    lora = peft.get_base_model().layer
    w, a, b = (lora.base_layer.weight, lora.lora_A["default"].weight,
               lora.lora_B["default"].weight)
    assert (w.dtype, a.dtype) == (torch.bfloat16, torch.float32)  # peft keeps adapters float32
    once = (w.float() + 2.0 * (b @ a)).to(torch.bfloat16)  # s = alpha / r = 2
    thrice = w + (b.bfloat16() @ a.bfloat16()) * torch.tensor(2.0, dtype=torch.bfloat16)
    assert not torch.equal(once, thrice)
    for t in (w, a, b):
        t._stand_in_cuda = True
    with StandInCuda(), torch.no_grad():
        out = torch.empty(w.shape, dtype=torch.bfloat16, device=CUDA)
        merge_into(out, lora)
        assert on_gpu(out) and out.dtype == torch.bfloat16
    assert torch.equal(out, once)


def test_on_a_gpu_the_copy_is_made_only_if_it_fits(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """The merged copy of the 28 adapted weights (4 x (4 x 128 x 128 + 3 x 128 x 512) floats,
    4 MiB) may take MERGED_COPY_SHARE_GPU (a quarter) of a GPU's free memory: 16 MiB free
    is enough, 15 MiB is not. Refused, sampling goes through the LoRA layers and the run's
    log says why."""
    from core.engine.train import train
    from core.runtime.store import RunStore

    loaded = load_policy(RunConfig(threads=1))
    copy_bytes = sum(plain.weight.nbytes for plain, _ in loaded.merge_pairs)
    assert copy_bytes == 4 * (4 * 128 * 128 + 3 * 128 * 512) * 4
    gpu, why = torch.device("cuda"), []
    for free in (16 * 2**20, 15 * 2**20):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, f=free: (f, 80e9))
        why.append(modeling.merged_copy_too_big(copy_bytes, gpu))
    assert why[0] == ""
    assert "(4 MiB) would take more than 25% of the GPU's free memory (15 MiB)" in why[1]
    assert modeling.merged_copy_too_big(copy_bytes, torch.device("cpu")) == ""
    monkeypatch.setattr(modeling, "merged_copy_too_big", lambda copy_bytes, device: "too big")
    config = build_config("smoke", steps=1, threads=1, no_eval=True)
    refused = load_policy(config)
    assert refused.sampler is None and refused.sampling_model() is refused.model
    store = RunStore(tmp_path)
    writer = store.create(config)
    assert train(config, writer, loaded=refused) == "finished"
    assert "merged sampling off: too big" in (writer.path / "log.txt").read_text()


def test_lora_on_the_lm_head_is_refused() -> None:
    """Scoring reads the head's base weight, so an adapter on the head would be sampled with
    but never scored or trained: refused with a message that says what to change."""
    from core.models.model_source import ModelError

    with pytest.raises(ModelError, match="leave the head out of lora_targets"):
        load_policy(RunConfig(threads=1, lora_targets="q_proj,lm_head"))
    assert load_policy(RunConfig(threads=1, lora_targets="q_proj,v_proj")).merge_pairs

"""A real (tiny) training run: LoRA weights move, base weights do not, every recipe runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import RECIPE_NAMES, build_config
from core.engine.modeling import load_policy
from core.engine.train import train
from core.runtime.store import RunStore
from tools.pretrain import build_model, build_tokenizer


@pytest.fixture(scope="module")
def random_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny-arith-shaped model: every answer is wrong, so NSR always updates."""
    path = tmp_path_factory.mktemp("random-model")
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_lora_changes_and_base_does_not(random_model: Path, tmp_path: Path) -> None:
    config = build_config("smoke", model=str(random_model), recipe="nsr", steps=3, no_eval=True,
                          threads=1)
    loaded = load_policy(config)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    status = train(config, RunStore(tmp_path).create(config), loaded=loaded)
    assert status == "finished"
    after = dict(loaded.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    base = [n for n in before if "lora_" not in n]
    assert lora and base
    assert all(not after[n].requires_grad for n in base)
    assert all(torch.equal(before[n], after[n]) for n in base), "a base weight moved"
    changed = [n for n in lora if not torch.equal(before[n], after[n])]
    # LoRA B starts at zero and A moves once B is non-zero: both kinds must have moved.
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)


@pytest.mark.parametrize("recipe", RECIPE_NAMES)
def test_every_recipe_trains_and_logs(recipe: str, tmp_path: Path) -> None:
    """Two steps of each recipe on the embedded model, with evaluation, end to end."""
    config = build_config("smoke", recipe=recipe, steps=2, eval_every=1, threads=1,
                          kl_beta=0.05 if recipe == "binary" else 0.0,
                          inner_epochs=2 if recipe == "rlcr" else 1)
    store = RunStore(tmp_path)
    writer = store.create(config)
    assert train(config, writer) == "finished"
    record = store.load(writer.run_id)
    assert [t["step"] for t in record.train] == [1, 2]
    assert [e["step"] for e in record.evals] == [0, 1, 2]
    assert all(t["loss"] == t["loss"] for t in record.train)  # finite, not NaN
    if recipe == "binary":
        assert "loss/kl" in record.train[0]
    if recipe == "rlsf":
        assert "rlsf/pairs" in record.train[0]
    assert store.samples(writer.run_id)


def test_pretraining_is_deterministic() -> None:
    """Two short builds from scratch give identical weights (the full build is longer)."""
    from tools.pretrain import pretrain

    torch.set_num_threads(1)
    a, _ = pretrain(steps=3, progress=False)
    b, _ = pretrain(steps=3, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_rlsf_training_is_blind_to_correctness(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rlsf runs, one with every correctness label flipped, move the LoRA weights
    identically: nothing the update does depends on whether an answer is right."""
    import dataclasses

    import core.engine.train as train_module

    config = build_config("smoke", recipe="rlsf", steps=2, no_eval=True, threads=1,
                          rlsf_threshold=0.0)
    honest_grade = train_module.grade
    weights = []
    for flip in (False, True):
        if flip:
            monkeypatch.setattr(train_module, "grade", lambda *a: dataclasses.replace(
                honest_grade(*a), correct=1.0 - honest_grade(*a).correct))
        loaded = load_policy(config)
        assert train(config, RunStore(tmp_path / str(flip)).create(config),
                     loaded=loaded) == "finished"
        weights.append({n: p.detach().clone() for n, p in loaded.model.named_parameters()
                        if "lora_" in n})
    assert any(bool(w.abs().sum() > 0) for n, w in weights[0].items() if "lora_B" in n)
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_init_from_starts_where_the_other_run_ended(tmp_path: Path) -> None:
    """A run with init_from begins at the other run's final policy, and its reference (the
    adapter off) is that policy too; a chain of two folds both adapters in."""
    from core.runtime.runner import check_init_from
    from core.runtime.store import ADAPTER_FILE

    store = RunStore(tmp_path)
    ids = torch.tensor([[1, 5, 6, 14, 7, 8, 17]])  # <bos>12+34=

    def logits(model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=ids).logits

    ends = []
    parent = ""
    for recipe in ("binary", "psr"):
        config = build_config("smoke", recipe=recipe, steps=2, no_eval=True, threads=1,
                              init_from=parent)
        check_init_from(config, store)
        loaded = load_policy(config, store.path(parent) if parent else None)
        start = logits(loaded.model)
        if ends:  # the second run starts at the end of the first, its reference too
            assert torch.allclose(start, ends[-1], atol=1e-5)
            with loaded.model.disable_adapter():
                assert torch.allclose(logits(loaded.model), ends[-1], atol=1e-5)
            assert torch.allclose(logits(loaded.sampling_model()), ends[-1], atol=1e-5)
        writer = store.create(config)
        assert train(config, writer, loaded=loaded) == "finished"
        writer.update_status(status="finished")  # what `execute` records around `train`
        assert (writer.path / ADAPTER_FILE).is_file()
        ends.append(logits(loaded.model))
        assert not torch.allclose(ends[-1], start, atol=1e-5)  # training moved it
        parent = writer.run_id
    # A third run from the second sees both adapters folded in.
    chained = load_policy(build_config("smoke", init_from=parent, threads=1), store.path(parent))
    assert torch.allclose(logits(chained.model), ends[-1], atol=1e-5)
    first = next(r for r in store.list() if r.id != parent)
    assert store.load(parent).config["init_from"] == first.id  # recorded in config.json


def test_init_from_refuses_a_missing_or_unfinished_run(tmp_path: Path) -> None:
    from core.runtime.runner import check_init_from

    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="no run"):
        check_init_from(build_config("smoke", init_from="nope"), store)
    queued = store.create(build_config("smoke"))
    with pytest.raises(ValueError, match="only a finished run"):
        check_init_from(build_config("smoke", init_from=queued.run_id), store)

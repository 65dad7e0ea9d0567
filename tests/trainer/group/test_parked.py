"""Finished members answer their sample prompts together, each as it answers alone; trials wait for a free place.

The reference for every sample is independent of the group: the saved adapter loaded with PEFT and asked
through ``trainer.samples.generate_samples``, the single-trial path.
"""

from __future__ import annotations

import json
import queue

import pytest
import torch

from tests.sweep.live_study import TINY_MODEL
from tests.trainer.group.rounding import assert_close_to_scale
from tests.trainer.group.test_multi_lora import TARGETS, batch, grouped, peft_model
from tests.trainer.group.trial_events import events
from trainer.group import parked
from trainer.group.parked import KV_BYTES, MOST_SAMPLE_ROWS, Parked, parked_adapters, sample_rows
from trainer.group.run_group import PARK_STEPS, TrialFolder, open_group
from trainer.group.serve import LEDGER_FILE, serve
from trainer.spec import TrialSpec
from trainer.trial_folder import STOP_FILE

CONFIGS = [(4, 16, False), (16, 8, True), (8, 32, False)]


def parked_of(layers, slot: int, names=None) -> Parked:
    """A parked member holding slot ``slot``'s adapters of ``layers`` (of the layers ``names`` only, if given)."""
    weights = {name: (layer.adapters[str(slot)].lora_A, layer.adapters[str(slot)].lora_B)
               for name, layer in layers.items() if names is None or name in names}
    return Parked(folder=None, result=None, weights=weights, scaling=next(iter(layers.values())).adapters[str(slot)].scaling)


@pytest.fixture(scope="module")
def base():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager").eval()


def peft_logits(base, layers, slot, r, alpha, rslora, ids, mask):
    peft = peft_model(base, r, alpha, rslora, seed=0).eval()
    modules = dict(peft.base_model.model.named_modules())
    with torch.no_grad():
        for name, layer in layers.items():
            modules[name].lora_A["default"].weight.copy_(layer.adapters[str(slot)].lora_A)
            modules[name].lora_B["default"].weight.copy_(layer.adapters[str(slot)].lora_B)
        return peft(input_ids=ids, attention_mask=mask).logits


def test_each_block_of_rows_gets_its_member_s_peft_logits(base):
    """Exact blocks: PEFT's logits bit for bit; batched blocks (the stacked matmul's way): to rounding; the rows of a
    member that adapts none of the layers get the base's logits."""
    model, _, layers = grouped(base, CONFIGS)
    model.eval()
    parts = [batch(4, 40, seed) for seed in (1, 2, 3, 4)]
    ids, mask = torch.cat([i for i, _ in parts]), torch.cat([m for _, m in parts])
    parked = [parked_of(layers, 0), parked_of(layers, 1), parked_of(layers, 2, names=set()), parked_of(layers, 2)]
    with torch.no_grad():
        with parked_adapters(layers, parked, exact=True):
            exact = model(input_ids=ids, attention_mask=mask).logits.split(4)
        with parked_adapters(layers, parked, exact=False):
            batched = model(input_ids=ids, attention_mask=mask).logits.split(4)
        plain = base(input_ids=parts[2][0], attention_mask=parts[2][1]).logits
    for block, slot in ((0, 0), (1, 1), (3, 2)):
        r, alpha, rslora = CONFIGS[slot]
        theirs = peft_logits(base, layers, slot, r, alpha, rslora, *parts[block])
        assert torch.equal(exact[block], theirs)
        assert_close_to_scale(batched[block], theirs, rel=2e-5)
    assert torch.equal(exact[2], plain)
    torch.testing.assert_close(batched[2], plain, rtol=1e-6, atol=1e-6)
    assert all(layer.blocks is None for layer in layers.values())  # only within the block


def spec_for(data, folder, number: int, r: int, lr: float, epochs: int = 1) -> TrialSpec:
    return TrialSpec.model_validate({
        "study": "parked", "trial_number": number, "output_dir": str(folder), "backend": "grouped",
        "model": {"name_or_path": str(TINY_MODEL), "max_seq_length": 256, "load_in_4bit": False,
                  "chat_template": "llama-3", "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "lora": {"r": r, "lora_alpha": 2 * r},
        "training": {"learning_rate": lr, "num_train_epochs": epochs, "per_device_train_batch_size": 8,
                     "per_device_eval_batch_size": 4, "warmup_steps": 2, "optim": "adamw_torch",
                     "weight_decay": 0.0, "eval_points": 2, "seed": 3407},
        "samples": {"count": 6, "max_new_tokens": 8},  # two generate batches of four and two prompts
    })


def alone_samples(folder) -> list[dict[str, str]]:
    """The trial's samples from its saved adapter through PEFT and the single-trial sample path."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.chat_data import ensure_pad_token
    from trainer.samples import generate_samples
    from trainer.trial_data import load_rows

    spec = TrialSpec.read(folder / "adapter" / "trial_spec.json")
    base = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, str(folder / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "adapter")
    ensure_pad_token(tokenizer)
    _, eval_rows, fmt = load_rows(spec)
    return generate_samples(spec, model, tokenizer, eval_rows, fmt, "transformers")


@pytest.mark.parametrize("matmul", ["loop", "stacked"])
def test_members_that_finish_together_answer_in_one_batch_as_each_alone(data, tmp_path, matmul):
    specs = [spec_for(data, tmp_path / str(n), n, r, lr) for n, (r, lr) in enumerate([(4, 2e-2), (16, 5e-3)])]
    group = open_group(specs[0], TARGETS[:2] + ["o_proj"], matmul)
    for spec in specs:
        group.offer(TrialFolder(spec))
    while group.busy:
        group.advance()
    assert group.ledger.counts["sampled"] == 2 and group.ledger.counts["sample_batches"] == 2  # 6 prompts, batch 4
    answers = []
    for spec in specs:
        [result] = events(spec.out, "result")
        assert result["status"] == "ok" and len(result["samples"]) == 6
        assert result["samples"] == alone_samples(spec.out)
        assert not (spec.out / "checkpoints").exists()  # dropped once the result is written
        answers.append([s["answer"] for s in result["samples"]])
    assert answers[0] != answers[1]  # the two adapters differ: each block had its own


def test_a_generate_call_holds_as_many_members_prompts_as_it_has_rows_for(data, tmp_path, monkeypatch):
    # rows for one member's block of 4 prompts a call: each member answers in calls of its own, the same answers
    monkeypatch.setattr(parked, "MOST_SAMPLE_ROWS", 4)
    specs = [spec_for(data, tmp_path / str(n), n, r, lr) for n, (r, lr) in enumerate([(4, 2e-2), (16, 5e-3)])]
    group = open_group(specs[0], TARGETS[:2] + ["o_proj"], "stacked")
    for spec in specs:
        group.offer(TrialFolder(spec))
    while group.busy:
        group.advance()
    assert group.ledger.counts["sampled"] == 2 and group.ledger.counts["sample_batches"] == 4  # 2 calls each
    for spec in specs:
        [result] = events(spec.out, "result")
        assert result["samples"] == alone_samples(spec.out)


def test_members_finishing_one_by_one_with_none_to_follow_answer_a_quarter_of_the_places_at_a_time(data, tmp_path):
    # the last trials of a study: 8 places, nothing waiting, one member ends every 8 steps (1 to 8 epochs of 8
    # steps); each answered alone would cost 8 generate calls of its 2 batches, a quarter of 8 at a time 4
    specs = [spec_for(data, tmp_path / str(n), n, 4, 1e-2, epochs=n + 1) for n in range(8)]
    group = open_group(specs[0], TARGETS[:2], "stacked", max_live=8)
    for spec in specs:
        group.offer(TrialFolder(spec))
    while group.busy:
        group.advance()
    assert group.ledger.counts["sampled"] == 8 and group.ledger.counts["sample_batches"] == 4 * 2
    for spec in specs[:2]:  # the first waited 8 steps for the second: its samples are still its own
        [result] = events(spec.out, "result")
        assert result["status"] == "ok" and result["samples"] == alone_samples(spec.out)


def test_a_parked_member_answers_alone_after_park_steps(data, tmp_path):
    # 8 places, two members: the first ends at step 8, the other at 32; the first does not wait for it
    specs = [spec_for(data, tmp_path / str(n), n, 4, 1e-2, epochs=epochs) for n, epochs in enumerate([1, 4])]
    group = open_group(specs[0], TARGETS[:2], "stacked", max_live=8)
    for spec in specs:
        group.offer(TrialFolder(spec))
    answered_at = []
    while group.busy:
        sampled = group.ledger.counts["sampled"]
        group.advance()
        if group.ledger.counts["sampled"] > sampled:
            answered_at.append(group.steps)
    assert answered_at == [8 + PARK_STEPS, 32]


def test_sample_rows_fit_the_keys_and_values_of_the_model():
    from transformers import LlamaConfig

    small = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)
    large = LlamaConfig(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096)
    assert sample_rows(small, 150) == MOST_SAMPLE_ROWS  # SmolLM2-135M: 23 kB a token, 2,048 rows in 7 GB
    rows = sample_rows(large, 600)  # Llama-3-8B: 128 kB a token
    assert 64 < rows < 512 and rows * 600 * 2 * 32 * 8 * 128 * 2 <= KV_BYTES < (rows + 1) * 600 * 2 * 32 * 8 * 128 * 2
    assert sample_rows(large, 10**9) == 1  # at least one row


def test_trials_wait_for_a_free_place_and_one_stopped_while_waiting_never_trains(data, tmp_path):
    """``serve`` with one place: trial 1 joins when trial 0 has left, trial 2 is stopped while it waits; trial 0's
    result waits for its samples until no waiting trial can take the free place, then both answer in one batch."""
    specs = [spec_for(data, tmp_path / str(n), n, r, lr) for n, (r, lr) in enumerate([(4, 2e-2), (8, 1e-2), (4, 1e-3)])]
    requests: queue.Queue = queue.Queue()
    for spec in specs:
        spec.out.mkdir(parents=True)
        spec.write(spec.out / "spec.json")
        requests.put({"spec": str(spec.out / "spec.json"), "env": {}})
    (specs[2].out / STOP_FILE).touch()
    requests.put(None)
    serve(requests, TARGETS[:2], "loop", max_live=1, ledger_path=tmp_path / LEDGER_FILE)
    first, second, stopped = (events(spec.out, "result")[0] for spec in specs)
    assert (first["status"], second["status"]) == ("ok", "ok")
    assert (stopped["status"], stopped["steps"]) == ("stopped", 0) and not events(specs[2].out, "setup")
    assert "group=1" in events(specs[1].out, "setup")[0]["notes"] and "slot=0" in events(specs[1].out, "setup")[0]["notes"]
    for spec in specs[:2]:
        assert events(spec.out, "result")[0]["samples"] == alone_samples(spec.out)
        assert [e["name"] for e in events(spec.out, "phase")][-2:] == ["trained", "samples"]
    ledger = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert (ledger["sampled"], ledger["sample_batches"]) == (2, 2)
    assert (ledger["steps"], ledger["mean_members"]) == (first["steps"] + second["steps"], 1.0)
    assert ledger["tokens"] == first["train_tokens"] + second["train_tokens"]
    assert all(ledger["seconds"][name] > 0 for name in ("train", "evaluate", "finish", "samples", "join"))


def test_a_member_whose_samples_fail_fails_alone(data, tmp_path, monkeypatch):
    """The batch fails (it holds the rank-16 member, whose answers raise): each member answers alone, the rank-4
    one as it does by itself, the rank-16 one fails with the reason; neither takes the group down."""
    import trainer.group.parked as parked

    def failing(spec, model, tokenizer, prompts):
        layer = next(iter(layers.values()))
        if any(pair is not None and pair[0].shape[0] == 16 for pair in layer.blocks.pairs):
            raise RuntimeError("injected: no answers for rank 16")
        return answer(spec, model, tokenizer, prompts)

    answer = parked.answer
    monkeypatch.setattr(parked, "answer", failing)
    specs = [spec_for(data, tmp_path / str(n), n, r, lr) for n, (r, lr) in enumerate([(4, 2e-2), (16, 5e-3)])]
    group = open_group(specs[0], TARGETS[:2], "loop")
    layers = group.trainer.layers
    for spec in specs:
        group.offer(TrialFolder(spec))
    while group.busy:
        group.advance()
    [ok], [failed] = events(specs[0].out, "result"), events(specs[1].out, "result")
    assert ok["status"] == "ok" and ok["samples"] == alone_samples(specs[0].out)
    assert failed["status"] == "error" and "injected: no answers for rank 16" in failed["reason"]
    assert (specs[1].out / "adapter").exists()  # its training and adapter were done; only its samples failed

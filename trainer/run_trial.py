"""One trial, start to end: spec -> model -> LoRA -> data -> train -> evaluate -> save -> result.

With ``evaluate_only`` in the spec the chain stops before training: the base model's eval loss,
samples and chrF are the result (see :func:`evaluate_base`), and no adapter is saved.

A chain of flat functions in the order they run. Every outcome, failures included, ends in a
:class:`trainer.events.Result` event; the exit code says the same (0 ok or stopped, 2 bad input,
3 out of memory, 1 any other error).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from trainer import checkpoints, tracking
from trainer.events import EventWriter, Phase, Result, Setup, Started
from trainer.samples import chrf, generate_samples
from trainer.spec import TrialSpec
from trainer.trial_folder import ADAPTER_DIR, CHECKPOINT_DIR, EVENTS_FILE

EXIT_CODES = {"ok": 0, "stopped": 0, "error": 1, "bad_input": 2, "oom": 3}
FOLDER_WAIT_SECONDS = 60  # a killed previous trainer of this folder is gone well within this


class BadInput(ValueError):
    """A problem with the study's inputs (data, model, template), not a bug."""


def main(spec_path: Path, started: float | None = None, before_result=None, resident=None) -> int:
    """Run the trial of ``spec_path``; returns the exit code.

    Used by the warm worker: ``before_result`` sees the result once the trial's objects are out of
    scope and may amend it before it is emitted; ``resident`` (a :class:`ResidentBase`) lends the
    base model kept from the previous trial and keeps this one's after a clean end.
    """
    from trainer.process_guard import FolderBusy, hold_trial_folder

    started = started or time.time()
    spec = TrialSpec.read(spec_path)
    try:
        lock = hold_trial_folder(spec.out, FOLDER_WAIT_SECONDS)
    except FolderBusy as e:
        print(f"FolderBusy: {e}", flush=True)
        return EXIT_CODES["error"]
    with lock:
        events = EventWriter(spec.out / EVENTS_FILE)
        events.emit(Started(pid=os.getpid()))
        try:
            result = run(spec, events, started, resident)
        except Exception as error:  # every failure becomes a recorded reason
            traceback.print_exc()
            result = _failure(error)
            if resident is not None:
                resident.drop()
        tracking.finish(result.status)
        if before_result is not None:
            result = before_result(result)
        events.emit(result)
        events.close()
    return EXIT_CODES[result.status]


def _failure(error: Exception) -> Result:
    from trainer.backends import ModelLoadError
    from trainer.chat_data import TemplateError
    from trainer.rows import RowError

    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    if isinstance(error, RowError):
        text = f"{error.key}: {text}"
    if isinstance(error, (BadInput, ModelLoadError, TemplateError, RowError)):
        return Result(status="bad_input", reason=text)
    if "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError":
        return Result(status="oom", reason=f"oom: {text}")
    return Result(status="error", reason=f"crash: {type(error).__name__}: {text}")


def run(spec: TrialSpec, events: EventWriter, started: float, resident=None) -> Result:
    if spec.backend == "grouped" and not spec.evaluate_only:  # the base is measured by the plain path below
        from trainer.group.run_group import run_alone

        if resident is not None:
            resident.drop()  # the group wraps the base's layers: not a base the next trial can take
        return run_alone(spec, events)
    phase = time.time()
    from trainer.backends import attach_lora, choose_backend, load_in_4bit, load_model

    backend, device = choose_backend(spec.backend)
    from trl import SFTTrainer  # after Unsloth, which patches it

    from trainer.callbacks import EventCallback
    from trainer.faults import fault_callbacks
    from trainer.saved_adapter import BestAdapter, remove_adapter
    from trainer.trial_data import encode, load_rows

    _freeze_imports()
    phase = _phase(events, "imports", phase)
    base_key = f"{backend}:{device}:{spec.model.model_dump_json()}"
    load = lambda: load_model(backend, spec.model, device, spec.training.seed)  # noqa: E731
    model, tokenizer, reused = resident.take(base_key, load, device) if resident is not None else (*load(), False)
    phase = _phase(events, "model", phase)
    train_rows, eval_rows, fmt = load_rows(spec)
    train_ds, eval_ds = encode(spec, tokenizer, train_rows, eval_rows, fmt)
    phase = _phase(events, "data", phase)
    quantized = load_in_4bit(spec.model, device)
    model = attach_lora(backend, model, spec.lora, spec.training.seed, quantized, device)
    phase = _phase(events, "lora", phase)

    tracking.start(spec)
    config = sft_config(spec, device)
    tokens_per_step = _mean_tokens(train_ds) * config.per_device_train_batch_size * config.gradient_accumulation_steps
    eval_points = None if spec.training.eval_steps else spec.training.eval_points
    callback = EventCallback(events, spec.out, tokens_per_step, started, eval_points)
    start = checkpoints.resume_point(spec) if not spec.evaluate_only else None
    best = BestAdapter(spec, tokenizer, resumed=start.path is not None) \
        if start is not None and spec.keep_adapter == "best_eval" else None
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        callbacks=[callback, *([best] if best else []),
                   *fault_callbacks(config.per_device_train_batch_size, spec.trial_number)],
    )
    if spec.evaluate_only:
        events.emit(Setup(backend=backend, device=device, total_steps=0, train_rows=len(train_ds),
                          eval_rows=len(eval_ds), notes=[f"format={fmt}", f"4bit={quantized}", "evaluate_only"]))
        _phase(events, "trainer", phase)
        return evaluate_base(spec, trainer, tokenizer, eval_rows, fmt, backend, device, resident)
    checkpoints.claim(spec)
    resumed = start.step
    notes = [f"format={fmt}", f"4bit={quantized}", f"optim={config.optim}", f"base={'kept' if reused else 'loaded'}",
             f"threads={_torch_threads()}"]
    events.emit(Setup(backend=backend, device=device, total_steps=_total_steps(trainer, config), train_rows=len(train_ds),
                      eval_rows=len(eval_ds), resumed_from_step=resumed, resume_note=start.note,
                      notes=notes))
    _phase(events, "trainer", phase)

    train_started = time.time()
    output = trainer.train(resume_from_checkpoint=start.path)
    train_seconds = time.time() - train_started
    step = trainer.state.global_step
    base = {"steps": step, "train_seconds": train_seconds, "backend": backend,
            "tokens_per_second": callback.tokens_per_second, "peak_memory_mb": peak_memory_mb(device),
            "train_loss": mean_train_loss(trainer.state.log_history, output.training_loss),
            "train_tokens": round((step - resumed) * tokens_per_step)}
    if callback.stopped:
        result = Result(status="stopped", reason="stopped by the orchestrator (pruned)", **base)
        remove_adapter(spec)  # a pruned trial keeps no adapter, not even its best so far
    else:
        if callback.last_eval is None or callback.last_eval[0] != step:
            trainer.evaluate()
        kept = keep_adapter(spec, trainer.model, tokenizer, best, callback.last_eval)
        if spec.samples.count:  # the live view says what the trial does after its last step
            events.emit(Phase(name="trained", seconds=train_seconds))
        samples = generate_samples(spec, trainer.model, tokenizer, eval_rows, fmt, backend)
        result = Result(status="ok", eval_loss=callback.last_eval[1], adapter_path=str(spec.out.resolve() / ADAPTER_DIR),
                        adapter_step=kept[0], adapter_eval_loss=kept[1], samples=samples, chrf=chrf(samples), **base)
    if resident is not None:
        # trained biases (lora.bias other than none) changed the base: the next trial loads afresh
        if spec.lora.bias == "none":
            resident.keep(trainer.model)
        else:
            resident.drop()
    checkpoints.drop(spec)  # finished (ok or pruned): nothing will resume them
    return result


def keep_adapter(spec: TrialSpec, model, tokenizer, best, last_eval: tuple[int, float]) -> tuple[int, float]:
    """The trial's adapter in place, and ``model`` holding its weights (the samples are its answers);
    returns (step, eval loss) of those weights: the last step's, or with ``best`` (a BestAdapter) the best
    eval point's."""
    from trainer.saved_adapter import load_adapter_weights, save_adapter

    if best is None:
        save_adapter(spec, model, tokenizer, *last_eval)
        return last_eval
    if best.kept[0] != last_eval[0]:
        load_adapter_weights(model, spec.out / ADAPTER_DIR)
    return best.kept


def evaluate_base(spec: TrialSpec, trainer, tokenizer, eval_rows, fmt, backend, device, resident=None) -> Result:
    """The base model as it is, before any training: eval loss, samples and their chrF.

    The trainer's model carries LoRA adapters that were never trained: PEFT starts every ``B``
    matrix at zero, so their output is zero and the model is the base. Going through the same
    trainer as a trial gives a loss measured exactly as the trials' are (same rows, collator and
    batches), and works where the Trainer refuses a quantized model without adapters.
    """
    loss = trainer.evaluate()["eval_loss"]
    samples = generate_samples(spec, trainer.model, tokenizer, eval_rows, fmt, backend)
    if resident is not None:
        resident.keep(trainer.model)
    return Result(status="ok", eval_loss=loss, samples=samples, chrf=chrf(samples), backend=backend,
                  peak_memory_mb=peak_memory_mb(device))


_FROZEN = False


def _freeze_imports() -> None:
    """Once per process, after the imports: move every object so far out of the cyclic collector's sight.

    The imported stack (torch, transformers, TRL, PEFT, Unsloth) is several hundred thousand objects
    that live as long as the process; a full ``gc.collect()`` walks them all (0.39 s on the CI machine
    with the stack but Unsloth). Unsloth's ``get_peft_model`` alone runs twelve. Later objects (models,
    trainers, a trial's garbage) are collected as before. Only the first call freezes: in a warm
    worker a later one would also freeze the kept base and the previous trial's leftovers.
    """
    global _FROZEN
    if not _FROZEN:
        import gc

        gc.collect()
        gc.freeze()
        _FROZEN = True


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def mean_train_loss(log_history: list[dict], fallback: float) -> float:
    """Mean train loss over every step of the trial, those before a resume included.

    The Trainer's own figure covers only the steps of the last ``train()`` call; the logged losses
    (each the mean over its logging interval) carry the whole history.
    """
    total, last_step = 0.0, 0
    for entry in log_history:
        if "loss" in entry:
            total += entry["loss"] * (entry["step"] - last_step)
            last_step = entry["step"]
    return total / last_step if last_step else fallback


def _phase(events: EventWriter, name: str, since: float) -> float:
    now = time.time()
    events.emit(Phase(name=name, seconds=now - since))
    return now


def sft_config(spec: TrialSpec, device: str):
    from trl import SFTConfig

    from trainer.backends import torch_dtype

    t = spec.training
    dtype = str(torch_dtype(spec.model, device)).removeprefix("torch.")
    optim = t.optim if device == "cuda" or "8bit" not in t.optim else "adamw_torch"
    return SFTConfig(
        output_dir=str(spec.out / CHECKPOINT_DIR),
        learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.per_device_train_batch_size, per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, warmup_steps=t.warmup_ratio or t.warmup_steps,
        optim=optim, weight_decay=t.weight_decay, lr_scheduler_type=t.lr_scheduler_type, max_grad_norm=t.max_grad_norm,
        # with eval_points the callback schedules evaluations and checkpoints itself
        eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        save_strategy="steps" if t.eval_steps else "no", save_steps=t.eval_steps,
        save_total_limit=1, logging_steps=t.logging_steps, seed=t.seed, data_seed=t.seed,
        bf16=dtype == "bfloat16", fp16=dtype == "float16", gradient_checkpointing=False,
        max_length=spec.model.max_seq_length, packing=t.packing, disable_tqdm=True,
        report_to=list(t.report_to) or "none", run_name=tracking.run_name(spec),
        dataloader_num_workers=0, use_cpu=device == "cpu",
    )


def _total_steps(trainer, config) -> int:
    if config.max_steps and config.max_steps > 0:
        return config.max_steps
    per_epoch = -(-len(trainer.get_train_dataloader()) // config.gradient_accumulation_steps)
    return max(1, per_epoch * int(config.num_train_epochs))


def _mean_tokens(dataset) -> float:
    return sum(len(ids) for ids in dataset["input_ids"]) / max(1, len(dataset))


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

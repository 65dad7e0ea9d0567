"""Run trials as one group on one shared base: load once, train together, each trial ends on its own.

    results = run_group([spec_a, spec_b, spec_c], max_live=2)

At most ``max_live`` trials train at once; when one ends (its epochs done), is stopped (its
``STOP`` file) or fails, it leaves the group and the next spec joins at the next step. Each trial
writes its own folder as ``python -m trainer`` would: ``events.jsonl`` (started, phases, setup,
progress, evaluations, result), ``adapter/`` in PEFT's format with the tokenizer and
``trial_spec.json``. A failure of one trial's own part (its data, its optimizer step, its save)
ends that trial only; a failure of the shared forward ends every trial in the group at that step.
All specs must share the ``model`` section (one base).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trainer.run_trial as single
from trainer import checkpoints
from trainer.events import EventWriter, Phase, Result, Setup, Started
from trainer.group.batches import TrainOrder, eval_batches, predicted_labels
from trainer.group.checkpoint import CheckpointWriter, find_checkpoint, restore_checkpoint, snapshot
from trainer.group.ledger import Ledger
from trainer.group.member import Member, log_progress, stage_logs
from trainer.group.parked import Parked, answer_parked
from trainer.samples import chrf
from trainer.spec import TrialSpec
from trainer.trial_data import encode, load_rows
from trainer.trial_folder import ADAPTER_DIR, EVENTS_FILE, STOP_FILE

DEFAULT_ATTENTION = {"cpu": "eager", "cuda": "sdpa"}  # eager: bit-identical rows on the CPU whatever the padding
HOLD_STEPS = 8  # group steps a held evaluation waits at most (its trial's pruner hears of it that much later)
PARK_STEPS = 16  # group steps a parked member waits at most for others to answer its samples with


@dataclass
class SectionData:
    """What the members of one data section share: its train and eval items, eval rows and format, each train
    row's predicted labels, and its eval batches by batch size (made at the first member that asks)."""

    train: list
    evaluation: list
    eval_rows: list
    fmt: str
    predicted: list[int]
    batches: dict[int, list] = field(default_factory=dict)

    def eval_batches(self, size: int, pad_id: int) -> list:
        if size not in self.batches:
            self.batches[size] = eval_batches(self.evaluation, size, pad_id)
        return self.batches[size]

    @property
    def rows_and_format(self) -> tuple:
        return self.eval_rows, self.fmt


@dataclass(eq=False)
class HeldEvaluation:
    """A member's evaluation at ``step``, its adapter then held in the trainer's ``row``, evaluated later; the
    checkpoint taken at that step, written once the evaluation is recorded; ``since``: the group's step count."""

    member: Member
    step: int
    row: int
    checkpoint: dict | None
    since: int


class TrialFolder:
    """A trial's folder while it is in the group: its lock, events file and, at the end, its result.

    Given ``events``, the caller already holds the folder and writes ``Started`` and the result itself.
    """

    def __init__(self, spec: TrialSpec, events: EventWriter | None = None, env: dict[str, str] | None = None) -> None:
        self.spec, self.events, self.owned, self.env = spec, events, events is None, env or {}
        self.lock, self.result, self.started = None, None, time.time()

    @property
    def stop_requested(self) -> bool:
        return (self.spec.out / STOP_FILE).exists()

    def open(self) -> None:
        self.started = time.time()
        if self.owned:
            from trainer.process_guard import hold_trial_folder

            self.spec.out.mkdir(parents=True, exist_ok=True)
            self.lock = hold_trial_folder(self.spec.out, single.FOLDER_WAIT_SECONDS)
            self.events = EventWriter(self.spec.out / EVENTS_FILE)
            self.events.emit(Started(pid=os.getpid()))

    def close(self, result: Result) -> None:
        self.result = result
        if self.owned and self.events is not None:
            self.events.emit(result)
            self.events.close()
        if self.lock is not None:
            self.lock.close()


def run_group(specs: list[TrialSpec], max_live: int | None = None, matmul: str = "loop", attention: str | None = None,
              folders: list[TrialFolder] | None = None) -> list[Result]:
    """Train ``specs`` on one base, ``max_live`` at a time (all by default); their results, in order."""
    folders = folders or [TrialFolder(spec) for spec in specs]
    first = specs[0]
    for spec in specs[1:]:
        if spec.model != first.model:
            raise single.BadInput(f"trial {spec.trial_number}: model section differs from trial {first.trial_number}'s; "
                           "a group shares one base")
    try:
        group = open_group(first, sorted({t for spec in specs for t in spec.lora.target_modules}), matmul, attention,
                           max_live)
    except Exception as error:  # no base, no group: every trial ends with the reason
        result = unopened_result(error)
        for folder in folders:
            end_unstarted(folder, result)
        return [folder.result for folder in folders]
    for folder in folders:
        group.offer(folder)
    while group.busy:
        group.advance()
    return [folder.result for folder in folders]


def open_group(first: TrialSpec, targets: list[str], matmul: str = "loop", attention: str | None = None,
               max_live: int | None = None, cuda_graphs: bool = False) -> GroupRun:
    """Load ``first``'s base once and wrap ``targets`` (every module any member may adapt) for a group that trains
    at most ``max_live`` trials at once (None: every trial offered); ``cuda_graphs``: a ``stacked`` group on a GPU
    replays its steps as CUDA graphs (:mod:`trainer.group.step_graphs`). On a GPU the base's RMSNorms run as
    one kernel each (:mod:`trainer.group.fused_norm`) and a ``stacked`` group rotates queries and keys by halves
    (:mod:`trainer.group.fused_rotary`)."""
    import torch

    from trainer.backends import load_model, torch_dtype
    from trainer.chat_data import ensure_pad_token
    from trainer.group.fused_norm import fuse_norms
    from trainer.group.group_trainer import new_group_trainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    began = time.time()
    model, tokenizer = load_model("transformers", first.model, device, first.training.seed)
    ensure_pad_token(tokenizer)  # the group pads its stack before any member's data sets the template
    model.set_attn_implementation(attention or DEFAULT_ATTENTION[device])
    if device == "cuda":  # a kernel for each norm (within bf16 rounding of transformers'): a fifth of a step's GPU time
        fuse_norms(model)
    dtype = torch_dtype(first.model, device)
    trainer = new_group_trainer(model, tokenizer.pad_token_id, targets, matmul, dtype if dtype != torch.float32 else None,
                                **trainer_options(device, matmul, cuda_graphs))
    return GroupRun(trainer, tokenizer, device, matmul, loaded=time.time() - began, model=first.model,
                    max_live=max_live)


def trainer_options(device: str, matmul: str, cuda_graphs: bool = False) -> dict:
    """The group trainer's options beyond the matmul: on a GPU a ``stacked`` group rotates queries and keys by halves
    (11 % less GPU time a step on the H200, bench/fill_gpu.py; the CPU stays bit for bit as before)."""
    options = {"cuda_graphs": True} if cuda_graphs else {}
    if device == "cuda" and matmul == "stacked":
        options["rotary_by_halves"] = True
    return options


def unopened_result(error: Exception) -> Result:
    """The result of every trial of a group whose base could not be loaded or wrapped."""
    traceback.print_exc()
    return Result(status="bad_input", reason=_last_line(error)) if isinstance(error, ValueError) \
        else single._failure(error)


def run_alone(spec: TrialSpec, events: EventWriter, matmul: str = "loop", attention: str | None = None) -> Result:
    """One trial through the group path (a group of one), into the caller's events: ``backend: grouped``."""
    return run_group([spec], 1, matmul, attention, [TrialFolder(spec, events)])[0]


class GroupRun:
    """The members in training (each with its folder), the trials waiting to join, the finished ones waiting for
    their samples (parked), the encoded data they share, and their comings and goings.

    :meth:`advance` is one turn: waiting trials join while fewer than ``max_live`` train (None: no limit), the
    members train a step, and the parked members' samples are generated, all in one batch, once the group has
    a free place that no waiting trial takes (the results they hold back would bring the next trials) and a
    quarter of ``max_live`` are parked or the first has waited ``PARK_STEPS`` steps, nothing is left to train,
    or one of them is asked to stop.

    Where the trainer can hold adapters (``stacked``) and ``max_live`` is at least 5, a member's evaluation
    waits, its adapter copied as it was at its eval point, until a quarter of ``max_live`` are held,
    the oldest has waited ``HOLD_STEPS`` steps, or one of them ends or is asked to stop; then all
    held are evaluated in as few forwards as the lone evaluation of one (a launch-bound forward on
    a GPU). Each loss is its eval point's, and its checkpoint is written once its loss is recorded.
    """

    def __init__(self, trainer, tokenizer, device: str, matmul: str, loaded: float, model=None,
                 max_live: int | None = None) -> None:
        self.trainer, self.tokenizer, self.device, self.matmul, self.loaded = trainer, tokenizer, device, matmul, loaded
        self.model = model  # the model section every member must share
        self.max_live = max_live
        self.hold_at_most = math.ceil(max_live / 4) if max_live and trainer.holds_adapters else 1
        if max_live:
            trainer.reserve(max_live)
        self.held: list[HeldEvaluation] = []
        self.steps = 0
        self.live: dict = {}
        self.waiting: deque[TrialFolder] = deque()
        self.parked: list[Parked] = []
        self.parked_since = 0  # the group's step when the first of the parked members parked
        self.park_at_least = math.ceil(max_live / 4) if max_live else 1  # parked members a batch of samples waits for
        self.data: dict[str, SectionData] = {}  # by data section: what its members share, made once
        self.checkpoints = CheckpointWriter()
        self.ledger = Ledger()

    @property
    def holds_evaluations(self) -> bool:
        """Whether members' evaluations wait, their adapters held, to be run several at once."""
        return self.hold_at_most > 1

    @property
    def busy(self) -> bool:
        return bool(self.live or self.waiting or self.parked)

    def offer(self, folder: TrialFolder) -> None:
        """Queue the folder's trial; it joins at the next turn with a free place."""
        self.waiting.append(folder)

    def advance(self) -> None:
        """One turn: joins, a step of the members, departures, then the parked members' samples when due."""
        self._admit()
        if self.live:
            self.step()
        self._admit()
        if self._answer_due():
            with self.ledger.timing("samples"):
                self._answer_parked()

    def _answer_due(self) -> bool:
        """Whether the parked members answer their samples now: once the group has a free place that no waiting
        trial takes (their results would bring the next trials), in batches of a quarter of ``max_live`` (each
        batch costs its decode steps, whatever its rows; the last trials of a study finish one by one with no
        trial left to take their places) or after ``PARK_STEPS`` steps; at once when nothing is left to train or
        one of them is asked to stop."""
        if not self.parked:
            return False
        if not self.live or any(p.folder.stop_requested for p in self.parked):
            return True
        if self._full_without_them():
            return False
        return len(self.parked) >= self.park_at_least or self.steps - self.parked_since >= PARK_STEPS

    def _full_without_them(self) -> bool:
        """Whether the group trains as many as it may without the trials the parked results would bring."""
        return self.max_live is not None and len(self.live) >= self.max_live

    def _admit(self) -> None:
        """Waiting trials join while there is a free place; one still waiting that is asked to stop ends untrained."""
        while self.waiting and not self._full_without_them():
            folder = self.waiting.popleft()
            with self.ledger.timing("join"), _environment(folder.env):
                self.join(folder)
        for folder in [f for f in self.waiting if f.stop_requested]:
            self.waiting.remove(folder)
            end_unstarted(folder, Result(status="stopped", reason="stopped by the orchestrator before it joined the "
                                                                  "group"))

    def join(self, folder: TrialFolder) -> None:
        """Add the folder's trial to the group; a trial that cannot join gets its result at once."""
        try:
            folder.open()
        except Exception as error:  # a busy folder: not this trial's to write
            traceback.print_exc()
            folder.result = single._failure(error)
            return
        try:
            member = self._member(folder)
        except ValueError as error:  # the spec, data or template (BadInput, RowError, TemplateError, ...)
            traceback.print_exc()
            folder.close(Result(status="bad_input", reason=_last_line(error)))
        except Exception as error:
            traceback.print_exc()
            folder.close(single._failure(error))
        else:
            self.live[member] = folder

    def _member(self, folder: TrialFolder):
        from trainer.env_contract import FAULT_ENV
        from trainer.faults import parse_faults

        spec, phase, pad = folder.spec, time.time(), self.tokenizer.pad_token_id
        if self.model is not None and spec.model != self.model:
            raise single.BadInput(f"trial {spec.trial_number}: its model section differs from the group's; "
                                  "a group shares one base")
        folder.events.emit(Phase(name="model", seconds=self.loaded))
        if spec.training.packing:
            raise single.BadInput("training.packing: the grouped backend stacks rows unpacked; set packing to false")
        data, t = self._encoded(spec), spec.training
        order = TrainOrder(data.train, t.per_device_train_batch_size, t.gradient_accumulation_steps,
                           t.num_train_epochs, t.max_steps, t.seed, pad, data.predicted)
        phase = _phase(folder, "data", phase)
        faults = [f for f in parse_faults(os.environ.get(FAULT_ENV, "")) if f.trial in (None, spec.trial_number)]
        member = self.trainer.add(spec, order, data.eval_batches(t.per_device_eval_batch_size, pad),
                                  folder.events, folder.started, faults)
        _phase(folder, "lora", phase)
        member.before_kill = self.checkpoints.settle
        self.checkpoints.settle(spec.out)  # a checkpoint of an earlier run of this trial in this group is on disk
        point = find_checkpoint(member)
        folder.events.emit(Setup(backend="grouped", device=self.device, total_steps=order.total_steps,
                                 train_rows=len(data.train), eval_rows=len(data.evaluation),
                                 resumed_from_step=point.step,
                                 resume_note=point.note,
                                 notes=[f"format={data.fmt}", f"matmul={self.matmul}", f"slot={member.slot}",
                                        f"group={len(self.trainer.members)}", "optim=adamw_torch"]))
        if point.path is None:
            member.start_at(0)
        else:
            restore_checkpoint(member, self.trainer.adapter_weights(member), Path(point.path))
        return member

    def _encoded(self, spec: TrialSpec) -> SectionData:
        """The spec's data section read and encoded, once per data section."""
        key = spec.data.model_dump_json()
        if key not in self.data:
            train_rows, eval_rows, fmt = load_rows(spec)
            train, evaluation = encode(spec, self.tokenizer, train_rows, eval_rows, fmt)
            train = train.to_list()
            self.data[key] = SectionData(train, evaluation.to_list(), eval_rows, fmt,
                                         [predicted_labels(row) for row in train])
        return self.data[key]

    def step(self) -> None:
        """One group step: forward and backward, each member's optimizer step, evaluations, departures."""
        with self.ledger.timing("train"):
            done = self._train()
        self.steps += 1
        evaluated = [m for m in done if m in self.live and m.eval_due]
        with self.ledger.timing("evaluate"):
            if self.holds_evaluations:
                self._hold(evaluated)
                if self.held and (len(self.held) >= self.hold_at_most or self.steps - self.held[0].since >= HOLD_STEPS
                                  or any(h.member in done and (h.member.finished or h.member.stop_requested)
                                         for h in self.held)):  # who leaves now leaves with its evaluations
                    self._evaluate_held()
            else:
                self._evaluate(evaluated)
                for member in [m for m in evaluated if m in self.live and not m.finished]:
                    self._checkpoint(member)
        failed = self.checkpoints.failed()
        for member in [m for m in self.live if m.spec.out in failed]:
            self._leave(member, single._failure(failed[member.spec.out]))
        with self.ledger.timing("finish"):
            for member in [m for m in done if m in self.live]:
                if member.stop_requested:
                    self._leave(member, self._result(member, "stopped"))
                elif member.finished:
                    self._complete(member)

    def _train(self) -> list:
        """The step of every member; the members whose optimizer stepped (who may evaluate, end or stop now)."""
        try:
            stepped = self.trainer.train_step()
        except Exception as error:  # the shared part failed: no member can go on
            traceback.print_exc()
            for member in list(self.live):
                self._leave(member, single._failure(error))
            return []
        # the reports due at the step before: their losses were staged behind it, so this waits for that step
        # only while the GPU runs this one
        log_progress(list(self.live))
        done = []
        for member, batch, loss in stepped:
            try:
                if member.after_backward(batch, loss):
                    done.append(member)
            except Exception as error:
                traceback.print_exc()
                self._leave(member, single._failure(error))
        self.ledger.count(steps=1, member_steps=len(stepped), tokens=sum(batch.tokens for _, batch, _ in stepped))
        graphs = getattr(self.trainer, "graphs", None)
        if graphs is not None:
            self.ledger.set(graph_captures=graphs.captures, graph_replays=graphs.replays,
                            graph_shapes=len(graphs.graphs), graph_reserved_mib=graphs.reserved_mib)
        done = [m for m in done if m in self.live]
        stage_logs(done)
        # who ends or stops now, or evaluates now and not later, reports first (its events in step order, its
        # checkpoint and result with every loss); the others report after the next step is queued (reading a loss
        # now would wait for this step: with dozens of members one reaches an eval point almost every step)
        log_progress([m for m in done if m.finished or m.stop_requested or (m.eval_due and not self.holds_evaluations)])
        return done

    def _evaluate(self, members: list) -> None:
        if not members:
            return
        try:
            for member, value in zip(members, self.trainer.evaluate(members), strict=True):
                member.record_eval(value)
        except Exception as error:
            traceback.print_exc()
            for member in members:
                self._leave(member, single._failure(error))
            return
        self.ledger.count(evaluations=len(members), evaluation_batches=1)

    def _hold(self, members: list) -> None:
        """Hold each member's adapter (and take its checkpoint, unless it ends now) for :meth:`_evaluate_held`."""
        for member in members:
            try:
                saved = None if member.finished else snapshot(member, self.trainer.checkpoint_state(member))
                row = self.trainer.hold(member)
            except Exception as error:
                traceback.print_exc()
                self._leave(member, single._failure(error))
                continue
            self.held.append(HeldEvaluation(member, member.step, row, saved, self.steps))

    def _evaluate_held(self, member: Member | None = None) -> None:
        """Every held evaluation (``member``'s: those of a member leaving now) at once; each recorded at its own
        step, then its checkpoint written."""
        held = [h for h in self.held if member in (None, h.member)]
        self.held = [h for h in self.held if h not in held]
        if not held:
            return
        try:
            values = self.trainer.evaluate_held([(h.row, h.member.eval_data) for h in held])
        except Exception as error:
            traceback.print_exc()
            if member is None:  # a member leaving now leaves for its own reason
                for failed in dict.fromkeys(h.member for h in held):
                    if failed in self.live:
                        self._leave(failed, single._failure(error))
            return
        finally:
            for h in held:
                self.trainer.release(h.row)
        self.ledger.count(evaluations=len(held), evaluation_batches=1)
        # their train losses up to their eval points first (read now: the evaluation waited for those steps)
        log_progress(list(dict.fromkeys(h.member for h in held)))
        for h, value in zip(held, values, strict=True):
            h.member.record_eval(value, step=h.step)
            if h.checkpoint is not None:
                h.checkpoint["state"]["evals"] = [e for e in h.member.evals if e[0] <= h.step]
                h.checkpoint["state"]["losses"] = [loss for loss in h.member.losses if loss[0] <= h.step]
                self.checkpoints.put(h.checkpoint, self.trainer.model.name_or_path)

    def _checkpoint(self, member) -> None:
        """At an eval point before the end (as the Trainer saves with eval_points), written while the group trains
        on; a failure ends the trial."""
        try:
            self.checkpoints.save(member, self.trainer.checkpoint_state(member), self.trainer.model.name_or_path)
        except Exception as error:
            traceback.print_exc()
            self._leave(member, single._failure(error))

    def _complete(self, member) -> None:
        """Save the finished member's adapter and park it: its result waits for its samples (:meth:`advance`)."""
        from trainer.group.multi_lora import lora_scaling
        from trainer.group.peft_format import save_group_adapter

        folder = self.live[member]
        spec = folder.spec
        try:
            if not member.evals or member.evals[-1][0] != member.step:
                member.record_eval(self.trainer.evaluate([member])[0])
            weights = self.trainer.adapter_weights(member)
            adapter = save_group_adapter(spec, weights, self.tokenizer, self.trainer.model.name_or_path,
                                         spec.out / ADAPTER_DIR)
            result = self._result(member, "ok", eval_loss=member.evals[-1][1], adapter_path=str(adapter))
            copied = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in weights.items()}
        except Exception as error:
            traceback.print_exc()
            self._leave(member, single._failure(error))
            return
        lora = spec.lora
        if spec.samples.count:  # the live view says what the trial waits for after its last step
            folder.events.emit(Phase(name="trained", seconds=result.train_seconds))
        self._leave(member, parked=Parked(folder, result, copied, lora_scaling(lora.r, lora.lora_alpha, lora.use_rslora)))

    def _answer_parked(self) -> None:
        """Every parked member's samples (one batch where they can share it), then its result."""
        parked, self.parked = self.parked, []
        began = time.time()
        self.ledger.count(sample_batches=answer_parked(parked, self.trainer.model, self.trainer.layers,
                                                       self.tokenizer, lambda spec: self._encoded(spec).rows_and_format,
                                                       exact=self.matmul != "stacked"),
                          sampled=len(parked))
        seconds = time.time() - began
        for p in parked:
            p.folder.events.emit(Phase(name="samples", seconds=seconds))
            if p.error is not None:
                result = single._failure(p.error)
            else:
                result = p.result.model_copy(update={"samples": p.samples, "chrf": chrf(p.samples)})
            _close(p.folder, result)

    def _result(self, member, status: str, **fields) -> Result:
        log_progress([member])  # its mean train loss counts every step
        reason = "stopped by the orchestrator (pruned)" if status == "stopped" else None
        return Result(status=status, reason=reason, steps=member.step, backend="grouped",
                      train_seconds=time.time() - self.live[member].started, tokens_per_second=member.tokens_per_second,
                      peak_memory_mb=single.peak_memory_mb(self.device), train_loss=member.mean_train_loss,
                      train_tokens=member.train_tokens, **fields)

    def _leave(self, member, result: Result | None = None, parked: Parked | None = None) -> None:
        """``member`` leaves the group with ``result``, or ``parked`` to wait for its samples."""
        try:
            log_progress([member])
        except Exception:  # a failed step's losses may not be readable; the result says why it ended
            traceback.print_exc()
        self._evaluate_held(member)  # its evaluations held so far are recorded (a failed member's too), as at once
        self.checkpoints.settle(member.spec.out)  # its result is written once its checkpoints are
        self.trainer.remove(member)
        folder = self.live.pop(member)
        if parked is not None:
            self.parked_since = self.parked_since if self.parked else self.steps
            self.parked.append(parked)
        else:
            _close(folder, result)


def _close(folder: TrialFolder, result: Result) -> None:
    """Write ``result`` and release the folder; a finished trial's checkpoints go (nothing will resume them)."""
    if result.status in ("ok", "stopped"):
        checkpoints.drop(folder.spec)
    folder.close(result)


def end_unstarted(folder: TrialFolder, result: Result) -> None:
    """Record ``result`` for a trial that never joined (its folder's lock first, when it is ours to take)."""
    try:
        folder.open()
    except Exception as error:
        folder.result = single._failure(error)
        return
    folder.close(result)


class _environment:
    """A trial's own variables (its fault injection, in tests) while it joins; the process's afterwards."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.saved = env, {}

    def __enter__(self) -> None:
        self.saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _last_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


def _phase(folder: TrialFolder, name: str, since: float) -> float:
    now = time.time()
    folder.events.emit(Phase(name=name, seconds=now - since))
    return now

"""The names of what the sweep records on Optuna's trials and studies (user attributes), in one place.

Writers (the objective, the trial loop, retries, repeats, study versions, the base-model measurement,
warm start) and readers (``status``, ``best``, ``report``, ``export`` and its model card) use these
names, never the strings. Optuna keeps them as JSON: ``python -m sweep status --json`` prints them
under ``user_attrs`` and optuna-dashboard lists them with each trial. Every trial the objective ran may carry:

- when it starts: ``lora_alpha``, ``use_rslora`` (the resolved values, also when derived from ``r``),
  ``keep_adapter`` (``last`` or ``best_eval``: which weights its adapter keeps), ``worker``
  (``host:pid`` of the orchestrator), ``trial_dir``, ``log_path``, ``placements``
  (one ``{device, trials_on_device, exclusive}`` per attempt);
- from the trainer's events: ``backend``, ``device``, ``resumed_from_step``, ``eval_losses``
  (``[[step, eval_loss], ...]``), and from its result the fields of :data:`RESULT_FIELDS`,
  ``samples`` and ``adapter_path`` (COMPLETE trials only);
- from the orchestrator's watch: ``exit_status``, ``wall_seconds``;
- when things went otherwise: ``fail_reason`` (``oom``, ``timeout``, ``crash: ...``, ``stale: ...``,
  ``interrupted``) with ``fail_detail``, ``oom_replaced``/``oom_retry`` (what was tried after running
  out of memory), ``retry_of``/``retries`` (a retried trial), ``repeat_of`` (a configuration that
  already ran), ``copied_from`` (a trial copied into a new study version), ``warm_start_from`` (a
  trial copied in from an earlier study).

Importing this module imports nothing.
"""

LORA_ALPHA = "lora_alpha"
USE_RSLORA = "use_rslora"
KEEP_ADAPTER = "keep_adapter"  # "last" or "best_eval" (trainer.spec.TrialSpec.keep_adapter); absent: "last"
WORKER = "worker"
TRIAL_DIR = "trial_dir"
LOG_PATH = "log_path"
PLACEMENTS = "placements"

BACKEND = "backend"
DEVICE = "device"
RESUMED_FROM_STEP = "resumed_from_step"
EVAL_LOSSES = "eval_losses"  # kept for pruned trials too

TRAIN_LOSS = "train_loss"
TOKENS_PER_SECOND = "tokens_per_second"
PEAK_MEMORY_MB = "peak_memory_mb"
TRAIN_SECONDS = "train_seconds"
TRAIN_TOKENS = "train_tokens"
STEPS = "steps"
CHRF = "chrf"  # chrF of the sample answers against their references
EVAL_LOSS = "eval_loss"  # the eval loss after the last step
ADAPTER_STEP = "adapter_step"  # the step whose weights the adapter holds
ADAPTER_EVAL_LOSS = "adapter_eval_loss"  # their eval loss (with keep_adapter best_eval: the lowest of the trial)
# the trainer's Result fields recorded under their own names (when not None)
RESULT_FIELDS = (TRAIN_LOSS, TOKENS_PER_SECOND, PEAK_MEMORY_MB, TRAIN_SECONDS, TRAIN_TOKENS, STEPS, BACKEND, CHRF,
                 EVAL_LOSS, ADAPTER_STEP, ADAPTER_EVAL_LOSS)
SAMPLES = "samples"  # [{prompt, reference, answer}, ...]
ADAPTER_PATH = "adapter_path"

EXIT_STATUS = "exit_status"
WALL_SECONDS = "wall_seconds"

FAIL_REASON = "fail_reason"
FAIL_DETAIL = "fail_detail"
INTERRUPTED = "interrupted"  # the fail_reason of a trial stopped by Ctrl-C or SIGTERM (it is retried)
OOM_REPLACED = "oom_replaced"
OOM_RETRY = "oom_retry"
RETRY_OF = "retry_of"  # number of the original trial whose folder (and checkpoint) a retry uses
RETRIES = "retries"  # how many times the original trial's parameters have been retried
REPEAT_OF = "repeat_of"  # the number of the trial whose outcome this one took
COPIED_FROM = "copied_from"  # "NAME#NUMBER" of the trial copied into a new study version
WARM_START_FROM = "warm_start_from"  # "NAME#NUMBER" of the earlier study's trial a warm start copied in

# user attributes of the study
STUDY_FILE = "study_file"  # the study file's path
CONFIG = "config"  # the resolved study file, as JSON
BASE_EVAL_LOSS = "base_eval_loss"  # the base model's eval loss before any training (sweep.run.base_model)
BASE_CHRF = "base_chrf"  # the base model's chrF on the sample prompts
WARM_START_TRIALS = "warm_start_trials"  # how many trials a warm start copied in (sweep.study.warm_start)

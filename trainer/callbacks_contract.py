"""Names shared by the trainer and the orchestrator that are not events (kept free of heavy imports)."""

STOP_FILE = "STOP"  # created in the trial folder by the orchestrator: stop at the next step
LOCK_FILE = ".trainer.lock"  # held by the trainer writing a trial folder, so a retry never writes beside it
TRIALS_ON_DEVICE_ENV = "SWEEP_TRIALS_ON_DEVICE"  # trials the orchestrator placed on this trial's device

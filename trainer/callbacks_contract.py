"""Names shared by the trainer and the orchestrator that are not events (kept free of heavy imports)."""

STOP_FILE = "STOP"  # created in the trial folder by the orchestrator: stop at the next step

"""The Optuna study: storage, its gate, identity and versions, trial folders, retries, budget."""

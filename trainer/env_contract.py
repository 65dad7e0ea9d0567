"""The environment variables through which the orchestrator tells a trainer more than its spec says.

A trainer's inputs are its ``spec.json`` (:mod:`trainer.spec`), its trial folder
(:mod:`trainer.trial_folder`) and these variables. Importing this module imports nothing.
"""

DEVICE_ENV = "CUDA_VISIBLE_DEVICES"  # the GPU the trial was placed on (absent: the trainer's own choice)
TRIALS_ON_DEVICE_ENV = "SWEEP_TRIALS_ON_DEVICE"  # trials the orchestrator placed on this trial's device
FAULT_ENV = "SWEEP_TEST_FAULT"  # tests only: faults to inject (trainer.faults)

"""Run one trial: ``python -m trainer SPEC.json``.

The orchestrator starts this; you can too, to rerun a trial by hand from its ``spec.json``.
Events go to ``events.jsonl`` beside the spec's output folder; logs go to stdout/stderr.
"""

import argparse
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path, help="the trial's spec.json")
    args = parser.parse_args()
    from pydantic import ValidationError

    from trainer.spec import TrialSpec

    try:
        TrialSpec.read(args.spec)
    except (OSError, ValidationError) as e:
        print(f"error: {args.spec}: not a valid trial spec: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    from trainer.process_guard import exit_with_parent
    from trainer.run_trial import main as run_trial

    exit_with_parent()
    return run_trial(args.spec)


if __name__ == "__main__":
    sys.exit(main())

"""Run trials as one group on one shared base: ``python -m trainer.group SPEC.json [SPEC.json ...]``.

Each spec's trial writes its own folder as ``python -m trainer SPEC.json`` would (events, adapter,
checkpoints); run again after an interruption, each resumes from its newest checkpoint. The exit code
is 0 when every trial ended ok or stopped, else the highest of theirs (1 error, 2 bad input, 3 out of memory).
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.group", description=__doc__.splitlines()[0])
    parser.add_argument("specs", type=Path, nargs="+", help="the trials' spec.json files")
    parser.add_argument("--max-live", type=int, help="trials training at once (default: all); the rest queue")
    parser.add_argument("--matmul", choices=["loop", "bmm", "stacked"], default="loop",
                        help="per-segment matmuls (bit-identical to a lone trial), batched over padded ranks, or "
                             "stacked adapters with one optimizer step for all trials (kernels a step independent of "
                             "the trials; equal to a lone trial up to rounding; no LoRA dropout)")
    parser.add_argument("--attention", choices=["eager", "sdpa"],
                        help="attention kernel (default: eager on the CPU, where it keeps rows exact; sdpa on a GPU)")
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    from trainer.spec import TrialSpec

    specs = []
    for path in args.specs:
        try:
            specs.append(TrialSpec.read(path))
        except (OSError, ValidationError) as e:
            print(f"error: {path}: not a valid trial spec: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    if args.max_live is not None and args.max_live < 1:
        print(f"error: --max-live must be at least 1, but got {args.max_live}", file=sys.stderr)
        return 2
    from trainer.group.run_group import run_group
    from trainer.process_guard import exit_with_parent
    from trainer.run_trial import EXIT_CODES, BadInput

    exit_with_parent()
    try:
        results = run_group(specs, args.max_live, args.matmul, args.attention)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return max(EXIT_CODES[result.status] for result in results)


if __name__ == "__main__":
    sys.exit(main())

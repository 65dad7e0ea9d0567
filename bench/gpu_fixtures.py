"""What the GPU scripts share: the random-weight 8B model and a synthetic chat set (about 530 tokens a row)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(*cmd: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command from the project root, capturing its output."""
    import os

    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def ensure_model(path: Path, size: str = "8b") -> None:
    """Build the random-weight Llama-architecture model and tokenizer once (trainer.make_model)."""
    if (path / "config.json").exists():
        return
    t = time.time()
    done = sh(sys.executable, "-m", "trainer.make_model", size, str(path))
    print(f"built {size} model in {time.time() - t:.0f}s rc={done.returncode} {done.stderr[-300:]}", flush=True)


def synthetic_chat(path: Path, rows: int, seed: int) -> None:
    """Chat rows of random synthetic words: 60-200 in the question, 200-600 in the answer."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for _ in range(rows):
            q = " ".join(f"w{rng.randrange(100, 120000)}" for _ in range(rng.randrange(60, 200)))
            a = " ".join(f"w{rng.randrange(100, 120000)}" for _ in range(rng.randrange(200, 600)))
            f.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n")

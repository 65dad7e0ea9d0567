"""bench/fill_gpu.py end to end on the CPU with the tiny model: every run measured, the JSON written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.sweep.live_study import ROOT, TINY_MODEL


def test_fill_gpu_measures_groups_and_bare_runs_on_the_cpu(tmp_path):
    out = tmp_path / "fill.json"
    done = subprocess.run(
        [sys.executable, "bench/fill_gpu.py", "--model", str(TINY_MODEL), "--device", "cpu", "--ks", "1,2",
         "--matmul", "loop,bmm,stacked", "--bare-batches", "4", "--batch", "4", "--steps", "4", "--warmup", "1",
         "--rows-tokens", "24", "--profile", "1", "--eval-rows", "12", "--eval-batch", "4", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert [r["run"] for r in results] == ["group K=1 loop", "group K=1 bmm", "group K=1 stacked packed",
                                           "group K=2 loop", "group K=2 bmm", "group K=2 stacked packed",
                                           "bare batch 4"]
    assert all(r["tokens_per_s"] > 0 and r["settings"]["device"] == "cpu" for r in results)
    assert [r["rows_per_step"] for r in results] == [4, 4, 4, 8, 8, 8, 4]
    assert "| group K=2 stacked packed |" in done.stdout
    share = {r["run"]: r["profile"]["real_token_share"] for r in results if "profile" in r}
    assert len(share) == 6 and all(0 < s <= 1 for s in share.values())  # the CPU has no CUDA kernels to rank
    assert share["group K=2 stacked packed"] > share["group K=2 loop"]  # packed: less padding than stacked rows
    evaluation = [r["evaluation"] for r in results if r["run"].startswith("group")]
    assert all(e["eval_rows"] == 12 and e["all_members_tokens_per_s"] > 0 and e["one_members_tokens_per_s"] > 0
               and 0 < e["profile"]["real_token_share"] <= 1 for e in evaluation)


def test_fill_gpu_refuses_a_window_with_no_steps(tmp_path):
    done = subprocess.run([sys.executable, "bench/fill_gpu.py", "--model", str(TINY_MODEL), "--steps", "3",
                           "--warmup", "3"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--steps must exceed --warmup" in done.stderr


def test_fill_gpu_refuses_an_unknown_matmul(tmp_path):
    done = subprocess.run([sys.executable, "bench/fill_gpu.py", "--model", str(TINY_MODEL), "--matmul", "bmm,fused"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--matmul bmm,fused: ['fused'] not among ['loop', 'bmm', 'stacked']" in done.stderr

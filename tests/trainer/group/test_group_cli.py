"""``python -m trainer.group`` refuses bad input with one line and exit 2, and records why in each trial."""

from __future__ import annotations

import json
import subprocess

from tests.sweep.live_study import DEMO_DATA, run_module
from trainer.spec import TrialSpec


def group_cli(*args: str) -> subprocess.CompletedProcess:
    return run_module("trainer.group", *args, timeout=300)


def test_a_spec_that_is_not_valid_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "spec.json").write_text('{"study": "s"}')
    done = group_cli(str(tmp_path / "spec.json"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {tmp_path / 'spec.json'}: not a valid trial spec")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_base_that_cannot_load_ends_every_trial_as_bad_input(tmp_path):
    paths = []
    for number in (0, 1):
        spec = TrialSpec.model_validate({
            "study": "s", "trial_number": number, "output_dir": str(tmp_path / str(number)), "backend": "grouped",
            "model": {"name_or_path": str(tmp_path / "no-such-model"), "load_in_4bit": False},
            "data": {"train": str(DEMO_DATA / "train.jsonl"), "eval": str(DEMO_DATA / "eval.jsonl")},
            "lora": {"r": 4, "lora_alpha": 8}, "training": {"learning_rate": 1e-3, "num_train_epochs": 1},
        })
        spec.write(tmp_path / f"{number}.json")
        paths.append(str(tmp_path / f"{number}.json"))
    done = group_cli(*paths)
    assert done.returncode == 2, done.stdout + done.stderr
    for number in (0, 1):
        lines = (tmp_path / str(number) / "events.jsonl").read_text().splitlines()
        result = json.loads(lines[-1])
        assert result["status"] == "bad_input" and "no-such-model" in result["reason"]


def test_a_tokenizer_without_a_pad_token_trains_in_a_group(tmp_path):
    # SmolLM2's tokenizer has none: the group must pad its stack with the pad a lone trial gets
    import shutil

    from tests.sweep.live_study import TINY_MODEL

    model = tmp_path / "no-pad"
    shutil.copytree(TINY_MODEL, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["pad_token"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    for matmul in ("loop", "stacked"):
        spec = TrialSpec.model_validate({
            "study": "s", "trial_number": 0, "output_dir": str(tmp_path / matmul), "backend": "grouped",
            "model": {"name_or_path": str(model), "load_in_4bit": False, "chat_template": "llama-3", "dtype": "float32"},
            "data": {"train": str(DEMO_DATA / "train.jsonl"), "eval": str(DEMO_DATA / "eval.jsonl")},
            "lora": {"r": 4, "lora_alpha": 8},
            "training": {"learning_rate": 1e-3, "num_train_epochs": 1, "max_steps": 2, "eval_points": 1,
                         "per_device_train_batch_size": 2, "per_device_eval_batch_size": 8, "optim": "adamw_torch"},
        })
        spec.write(tmp_path / f"{matmul}.json")
        done = group_cli(str(tmp_path / f"{matmul}.json"), "--matmul", matmul)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert json.loads((tmp_path / matmul / "events.jsonl").read_text().splitlines()[-1])["status"] == "ok"


def test_a_worker_stopped_with_sigterm_writes_its_ledger_first(data, tmp_path):
    """The orchestrator stops a group worker with SIGTERM (Ctrl-C of a sweep, its end): the worker's ledger of
    where its time went is on disk, and the worker ends by the signal as before."""
    import signal
    import sys
    import time

    from tests.sweep.live_study import ROOT, TINY_MODEL, sweep_env
    from trainer.group.serve import LEDGER_FILE

    spec = TrialSpec.model_validate({
        "study": "s", "trial_number": 0, "output_dir": str(tmp_path / "0"), "backend": "grouped",
        "model": {"name_or_path": str(TINY_MODEL), "load_in_4bit": False, "chat_template": "llama-3",
                  "dtype": "float32"},
        "data": {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl")},
        "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "training": {"learning_rate": 1e-3, "num_train_epochs": 1, "max_steps": 100000, "per_device_train_batch_size": 4},
    })
    spec.write(tmp_path / "0.json")
    worker = subprocess.Popen([sys.executable, "-m", "trainer.group.serve", "--targets", "q_proj,v_proj",
                               "--folder", str(tmp_path)], cwd=ROOT, env=sweep_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        worker.stdin.write(json.dumps({"spec": str(tmp_path / "0.json")}) + "\n")
        worker.stdin.flush()
        events = tmp_path / "0" / "events.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (events.exists() and '"progress"' in events.read_text()):
            time.sleep(0.2)
        assert '"progress"' in events.read_text(), "the trial never trained a step"
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == -signal.SIGTERM, output
    ledger = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert ledger["steps"] >= 1 and ledger["member_steps"] == ledger["steps"], ledger
    assert output.strip().splitlines()[-1].startswith("group: "), output

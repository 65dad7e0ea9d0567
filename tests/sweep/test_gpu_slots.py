"""Placing trials on GPUs: spreading, sharing, exclusive re-placement, ``auto`` from nvidia-smi's
free memory, the memory estimate against measured peaks, and each trainer's environment.

No GPU here: nvidia-smi is a stand-in script printing what the real one prints for the sweep's
query; ``bench/parallel_gpu.py`` runs the same code against real GPUs.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from sweep.launch.gpu_slots import PoolStopped, SlotPool
from sweep.launch.gpus import plan_capacity
from sweep.launch.memory_estimate import estimate_trial_gib
from sweep.launch.trainer_process import trial_env
from sweep.schema.study_file import load_study
from tests.sweep.live_study import fake_nvidia_smi, write_study

LLAMA_31_8B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
               "vocab_size": 128256, "tie_word_embeddings": False}


def in_thread(function):
    """Run ``function`` in a thread; returns (thread, box) where box[0] receives its result."""
    box = []
    thread = threading.Thread(target=lambda: box.append(function()), daemon=True)
    thread.start()
    return thread, box


def test_trials_spread_over_gpus_before_sharing_one():
    pool = SlotPool({"0": 2, "1": 2}, threading.Event())
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    assert {first.device, second.device} == {"0", "1"}
    assert (first.trials_on_device, second.trials_on_device, third.trials_on_device) == (1, 1, 2)
    shared = [lease for lease in (first, second) if lease.device == third.device][0]
    assert third.shared and shared.shared
    assert pool.size == 4
    assert third.env()["CUDA_VISIBLE_DEVICES"] == third.device
    assert third.env()["SWEEP_TRIALS_ON_DEVICE"] == "2"


def test_exclusive_lease_waits_for_the_device_to_empty_and_keeps_others_off():
    pool = SlotPool({None: 2}, threading.Event())
    a, b = pool.acquire(), pool.acquire()
    exclusive, got = in_thread(lambda: pool.acquire(exclusive=True))
    pool.release(a)
    time.sleep(0.3)
    assert not got, "b still runs on the device"
    newcomer, newcomer_got = in_thread(pool.acquire)
    time.sleep(0.3)
    assert not newcomer_got, "a device reserved for an exclusive trial takes no new trials"
    pool.release(b)
    exclusive.join(5)
    assert got and got[0].exclusive and got[0].trials_on_device == 1
    time.sleep(0.3)
    assert not newcomer_got
    pool.release(got[0])
    newcomer.join(5)
    assert newcomer_got and not newcomer_got[0].exclusive


def test_stopping_ends_a_waiting_acquire():
    stopping = threading.Event()
    pool = SlotPool({None: 1}, stopping)
    pool.acquire()
    waiting, result = in_thread(lambda: pytest.raises(PoolStopped, pool.acquire))
    stopping.set()
    pool.wake()
    waiting.join(5)
    assert result, "acquire must raise PoolStopped once the run stops"


def test_auto_fits_trials_into_each_gpus_free_memory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, "0, 80000, 81559\\n1, 20000, 81559\\n2, 4000, 81559\\n"))
    capacity = plan_capacity("all", "auto", lambda: 10.0, cpus=64)
    # 80000 MiB: 78.1 GiB x 0.9 / 10 -> 7; 20000 MiB -> 1; 4000 MiB fits none: one, with a warning
    assert capacity == {"0": 7, "1": 1, "2": 1}
    assert "it may not fit" in capsys.readouterr().out
    assert plan_capacity("1", "3", lambda: 10.0) == {"1": 3}
    assert plan_capacity(None, "2", lambda: 10.0) == {None: 2}


def test_auto_runs_no_more_trainers_than_cores_unless_they_share_a_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path, "0, 140000, 143771\n1, 140000, 143771\n"))
    # 136.7 GiB x 0.9 / 2 GiB: 61 fit; 6 cores for 2 GPUs: 3 trainers each
    assert plan_capacity("all", "auto", lambda: 2.0, cpus=6) == {"0": 3, "1": 3}
    assert "6 CPU cores for 2 GPU(s)" in capsys.readouterr().out
    assert plan_capacity("all", "auto", lambda: 2.0, cpus=64) == {"0": 8, "1": 8}
    # one group worker per GPU: memory alone, up to 48 trials
    assert plan_capacity("all", "auto", lambda: 2.0, grouped=True, cpus=6) == {"0": 48, "1": 48}
    assert plan_capacity("all", "auto", lambda: 4.0, grouped=True, cpus=6) == {"0": 30, "1": 30}


def test_memory_estimate_errs_high_against_h100_measurements(tmp_path):
    model = tmp_path / "llama-3.1-8b"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(LLAMA_31_8B))
    study = load_study(str(write_study(tmp_path, "estimate", 1)))
    study.config.model.name_or_path = str(model)
    study.config.model.max_seq_length = 530
    study.config.model.load_in_4bit = True
    study.config.model.dtype = "bfloat16"
    study.config.search.params.r.choices = [8, 16]
    # measured peaks (H100, batch 8 of ~530 tokens, r=16 on 7 projections): 13.3 GiB and 6.9 GiB
    assert 13.3 <= estimate_trial_gib(study, "transformers") <= 15.0
    assert 6.9 <= estimate_trial_gib(study, "unsloth") <= 9.0


def test_each_trainer_gets_caches_of_its_own(tmp_path):
    env = trial_env(tmp_path / "00003")
    for name in ("UNSLOTH_COMPILE_LOCATION", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"):
        assert env[name].startswith(str(tmp_path / "00003")), name
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_trainers_running_at_once_share_the_cpus_unless_the_user_chose():
    from sweep.launch.trainer_process import cpu_threads_env

    assert cpu_threads_env(4, environ={}, cpus=16) == {"OMP_NUM_THREADS": "4"}
    assert cpu_threads_env(8, environ={}, cpus=6) == {"OMP_NUM_THREADS": "1"}
    assert cpu_threads_env(1, environ={}, cpus=16) == {}  # one trainer: torch's own default
    assert cpu_threads_env(4, environ={"OMP_NUM_THREADS": "2"}, cpus=16) == {}

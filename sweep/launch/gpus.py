"""The run's devices: ``--gpus`` and ``--trials-per-gpu`` checked against the host's NVIDIA GPUs.

The GPUs come from ``nvidia-smi`` (never from torch, which the orchestrator does not import)::

    nvidia-smi --query-gpu=index,memory.free,memory.total --format=csv,noheader,nounits

``--gpus`` is a list of indices (``0,1,2,3``) or ``all``; left out, trials run where the trainer
puts them (the only GPU, or the CPU). ``--trials-per-gpu`` is a whole number K or ``auto``: as
many trials as fit in each GPU's free memory by :func:`sweep.launch.memory_estimate.estimate_trial_gib`,
at most ``AUTO_MAX_PER_GPU``, and no more trainer processes than CPU cores: a small model's trainer is
bound by Python launching kernels, one core each (H200, SmolLM2: 7,163 kernels a step at 34 us each,
``bench/step_profile.py``), so twelve processes on 16 cores already ran at load 11. A grouped study
(``execution.backend: grouped``) runs one process per GPU whatever K, so only memory counts, up to
``AUTO_MAX_GROUP``. Every mistake is a :class:`UserError`, raised before anything starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from sweep.errors import UserError

QUERY = ["nvidia-smi", "--query-gpu=index,memory.free,memory.total", "--format=csv,noheader,nounits"]
AUTO_MAX_PER_GPU = 8  # beyond a few processes a GPU gains little (4 gave 8% more than 2 on an H100)
# trials in one group worker: on an H200 the trainer's step gains up to 64 (SmolLM2: 119,000 tokens/s at 32, 146,000
# at 64, bench/fill_gpu.py, one call); a whole sweep of the real study ran at 72,000 with 48 at once (100 GB of the
# card's 143; 54,000 with 32 on the code before), 89,000 with the fused norms (101 GB; docs/BENCHMARKS.md), 99,000
# with the rotation by halves too (101 GB), 101,600 with each trial's optimizer work at its own rank and eval points
# that do not wait for the step (101 GB); 64 not yet in a whole sweep
AUTO_MAX_GROUP = 48
FREE_MEMORY_USED = 0.9  # leave a tenth of the free memory for fragmentation and other processes


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it (memory in MiB)."""

    index: str
    free_mib: int
    total_mib: int


def query_gpus(asked_for: str) -> list[Gpu]:
    """The host's GPUs; ``asked_for`` names the option that needs them, for the error line."""
    if shutil.which("nvidia-smi") is None:
        raise UserError(f"{asked_for}: no NVIDIA GPU on this host (nvidia-smi is not on PATH)")
    try:
        out = subprocess.run(QUERY, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(f"{asked_for}: nvidia-smi did not answer within 30 s") from None
    if out.returncode != 0:
        first = (out.stderr or out.stdout).strip().splitlines()
        raise UserError(f"{asked_for}: nvidia-smi failed: {first[0] if first else f'exit code {out.returncode}'}")
    gpus = parse_gpus(out.stdout)
    if not gpus:
        raise UserError(f"{asked_for}: nvidia-smi lists no GPU")
    return gpus


def parse_gpus(text: str) -> list[Gpu]:
    """Rows of ``index, memory.free, memory.total`` (MiB) as printed by :data:`QUERY`."""
    gpus = []
    for line in text.strip().splitlines():
        index, free, total = (field.strip() for field in line.split(","))
        gpus.append(Gpu(index, int(free), int(total)))
    return gpus


def plan_capacity(gpus_arg: str | None, per_gpu_arg: str, trial_gib: Callable[[], float], grouped: bool = False,
                  cpus: int | None = None) -> dict[str | None, int]:
    """Trials allowed at once on each device: ``{device: K}``; ``trial_gib`` estimates one trial (for auto).

    ``grouped``: the trials of a device share one process; ``cpus``: the cores this run may use (default: its affinity).
    """
    auto = per_gpu_arg.strip().lower() == "auto"
    per_gpu = None if auto else _whole_number(per_gpu_arg)
    if gpus_arg is None and not auto:
        return {None: per_gpu}
    wanted = _indices(gpus_arg)
    option = f"--gpus {gpus_arg}" if gpus_arg is not None else "--trials-per-gpu auto"
    gpus = _select(query_gpus(option), wanted, option)
    if not auto:
        return {gpu.index: per_gpu for gpu in gpus}
    need = trial_gib()
    cpus = cpus or len(os.sched_getaffinity(0))
    cores = AUTO_MAX_GROUP if grouped else max(1, cpus // len(gpus))
    capacity = {}
    for gpu in gpus:
        fits = int(gpu.free_mib / 1024 * FREE_MEMORY_USED // need)
        capacity[gpu.index] = max(1, min(AUTO_MAX_GROUP if grouped else AUTO_MAX_PER_GPU, fits, cores))
        note = "" if fits else " (it may not fit: a trial that runs out of memory fails with 'oom')"
        limit = "" if grouped or cores >= min(AUTO_MAX_PER_GPU, fits) else f", {cpus} CPU cores for {len(gpus)} GPU(s)"
        print(f"GPU {gpu.index}: {capacity[gpu.index]} trial(s) at once: about {need:.1f} GiB a trial, "
              f"{gpu.free_mib / 1024:.1f} GiB free{limit}{note}", flush=True)
    return capacity


def _whole_number(value: str) -> int:
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise UserError(f"--trials-per-gpu: {value!r} is not allowed: give a whole number of at least 1, or auto")
    return k


def _indices(gpus_arg: str | None) -> list[str] | None:
    """The GPU indices ``--gpus`` names; None for every GPU (``all`` or left out)."""
    if gpus_arg is None or gpus_arg.strip().lower() == "all":
        return None
    wanted = [g.strip() for g in gpus_arg.split(",") if g.strip()]
    if not wanted or not all(g.isdigit() for g in wanted):
        raise UserError(f"--gpus: {gpus_arg!r} is not allowed: give GPU indices like 0,1,2, or all")
    if len(set(wanted)) != len(wanted):
        raise UserError(f"--gpus: {gpus_arg!r} names a GPU twice; use --trials-per-gpu to run several trials on one")
    return wanted


def _select(gpus: list[Gpu], wanted: list[str] | None, option: str) -> list[Gpu]:
    if wanted is None:
        return gpus
    by_index = {gpu.index: gpu for gpu in gpus}
    missing = [g for g in wanted if g not in by_index]
    if missing:
        raise UserError(f"{option}: this host has no GPU {', '.join(missing)} (it has {', '.join(by_index)})")
    return [by_index[g] for g in wanted]

"""What twelve full garbage collections cost a trainer after its imports, with and without ``gc.freeze()``.

    python bench/gc_freeze.py

Unsloth's ``get_peft_model`` runs ``gc.collect()`` twelve times (three loops of three in
``FastLlamaModel.get_peft_model``, one in ``patch_peft_model``); each walks every object the imported
stack made. The trainer freezes those once, after its imports (``trainer.run_trial._freeze_imports``).
Imports what this machine has of the stack (Unsloth only where it imports).
"""

from __future__ import annotations

import gc
import importlib
import time

COLLECTIONS = 12


def twelve_collections() -> float:
    started = time.perf_counter()
    for _ in range(COLLECTIONS):
        gc.collect()
    return time.perf_counter() - started


def main() -> None:
    imported = []
    for name in ("unsloth", "torch", "transformers", "peft", "datasets", "trl"):
        try:
            importlib.import_module(name)
            imported.append(name)
        except Exception:  # noqa: BLE001  (Unsloth without a GPU may refuse)
            pass
    from trl import SFTTrainer  # noqa: F401  (what a trial imports)

    objects = len(gc.get_objects())
    before = twelve_collections()
    gc.freeze()
    after = twelve_collections()
    print(f"imported {', '.join(imported)}: {objects:,} objects tracked")
    print(f"{COLLECTIONS} full collections: {before:.2f} s; after gc.freeze(): {after:.3f} s")


if __name__ == "__main__":
    main()

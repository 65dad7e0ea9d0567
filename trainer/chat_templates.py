"""Chat templates by name: Unsloth's ``get_chat_template`` names (``chatml``, ``llama-3.1``, ``qwen-2.5``, ...).

``model.chat_template`` is ``model`` (the tokenizer's own template) or one of the names of
Unsloth's ``unsloth.chat_templates.CHAT_TEMPLATES``. The templates are read from a snapshot,
``unsloth_chat_templates.json`` beside this module, taken from the Unsloth version that the
``gpu`` extra pins, so that a name means the same text with and without Unsloth (it is not
installed on CPU hosts, and importing ``unsloth`` needs a GPU or its CPU fallback). Each entry is
the Jinja template exactly as ``get_chat_template(tokenizer, name)`` sets it (a default system
message filled in where Unsloth has one) and the template's stop word (``eos_token``: the
tokenizer's own end of sequence). What ``get_chat_template`` does beyond the template is not
done: it can rename tokens of the vocabulary (``map_eos_token``), here a stop word that is not
one token of the vocabulary stays text, learnt as the pieces it tokenises to.

Plain Python (json only), so the orchestrator validates names without the training stack.
Refresh the snapshot from an unpacked or installed Unsloth, without importing its package::

    python -m trainer.chat_templates [path/to/site-packages/unsloth]
"""

from __future__ import annotations

import difflib
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("unsloth_chat_templates.json")
OWN = "model"  # the tokenizer's own template
EOS_TOKEN = "eos_token"  # Unsloth's stop word meaning "the tokenizer's eos token"


@dataclass(frozen=True)
class ChatTemplate:
    """One of Unsloth's named templates: its Jinja text and the text that ends an assistant turn."""

    names: tuple[str, ...]
    template: str
    stop: str


@functools.cache
def templates() -> dict[str, ChatTemplate]:
    """Every name of the snapshot, aliases included, with its template."""
    found = {}
    for entry in json.loads(SNAPSHOT.read_text(encoding="utf-8"))["templates"]:
        template = ChatTemplate(names=tuple(entry["names"]), template=entry["template"], stop=entry["stop"])
        found.update(dict.fromkeys(template.names, template))
    return found


def names() -> list[str]:
    """The values ``model.chat_template`` takes: ``model``, then Unsloth's names."""
    return [OWN, *templates()]


def check_name(name: str) -> str:
    """``name`` if it is a known template; else a ValueError with a suggestion and the allowed names."""
    if name == OWN or name in templates():
        return name
    lowered = {n.lower(): n for n in names()}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    hint = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
    raise ValueError(f"unknown chat template{hint}; allowed: {OWN} (the tokenizer's own), "
                     f"{', '.join(templates())} (Unsloth's get_chat_template names)")


def template_for(name: str, tokenizer) -> ChatTemplate:
    """The named template as ``get_chat_template`` would set it on ``tokenizer``."""
    template = templates()[name]
    # get_chat_template puts BOS first for Gemma tokenizers ("or losses become too high")
    if type(tokenizer).__name__.startswith("Gemma") and not template.template.startswith(
            ("{{ bos_token }}", "{{- bos_token }}")):
        return ChatTemplate(names=template.names, template="{{ bos_token }}" + template.template, stop=template.stop)
    return template


def from_unsloth(module) -> list[dict]:
    """The snapshot's entries from ``unsloth.chat_templates`` (imported, or loaded by :func:`load_unsloth_module`)."""
    entries: dict[tuple[str, str], dict] = {}
    for name, (template, stop, _map_eos, _ollama) in module.CHAT_TEMPLATES.items():
        template, _ = module._change_system_message(template, name, None)  # as get_chat_template fills it
        if isinstance(stop, (list, tuple)):  # (token renames, stop word): the renames are Unsloth's vocab edits
            stop = stop[1]
        entry = entries.setdefault((template, stop), {"names": [], "stop": stop, "template": template})
        entry["names"].append(name)
    return list(entries.values())


def load_unsloth_module(package_dir: Path):
    """``unsloth/chat_templates.py`` of ``package_dir`` as a module, without running ``unsloth/__init__.py``
    (which looks for a GPU and patches transformers). It is loaded under a package name of its own, so
    an ``unsloth`` already imported in this process is left as it is."""
    import importlib.util
    import types

    package = types.ModuleType("_unsloth_templates")
    package.__path__ = [str(package_dir)]
    sys.modules["_unsloth_templates"] = package
    spec = importlib.util.spec_from_file_location("_unsloth_templates.chat_templates", package_dir / "chat_templates.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        package_dir = Path(argv[0])
    else:
        import importlib.util

        found = importlib.util.find_spec("unsloth")
        if found is None:
            print("error: unsloth is not installed; give the folder of its package (an unpacked wheel's unsloth/)",
                  file=sys.stderr)
            return 2
        package_dir = Path(next(iter(found.submodule_search_locations)))
    version = next((p.name.removesuffix(".dist-info").split("-")[1] for p in package_dir.parent.glob("unsloth-*.dist-info")), "unknown")
    entries = from_unsloth(load_unsloth_module(package_dir))
    snapshot = {"source": f"unsloth {version}, unsloth/chat_templates.py (python -m trainer.chat_templates)",
                "templates": entries}
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{SNAPSHOT}: {sum(len(e['names']) for e in entries)} names, {len(entries)} templates from unsloth {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generate docs/reference/environment.md from the model's field docstrings.

The model is the only place defaults are defined and documented; this page is
derived from it (a test keeps it current: run ``python -m plinth.docgen``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from plinth.model import Environment

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "reference" / "environment.md"


def _type_name(annotation: Any) -> str:
    generic = getattr(annotation, "__args__", None) is not None
    text = str(annotation) if generic else getattr(annotation, "__name__", str(annotation))
    for prefix in ("typing.", "ipaddress.", "plinth.model.", "pydantic.networks."):
        text = text.replace(prefix, "")
    # Annotated[X, validators...] inside a container: the reader needs X (the validators'
    # reprs carry memory addresses, which would change the page at every run)
    text = re.sub(r"Annotated\[([\w.]+), [^\[\]]*\]", r"\1", text)
    # a "|" would end the markdown table cell
    return text.replace(" | ", " or ").replace("|", " or ")


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(see below)"
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, tuple):
        value = list(value)
    try:
        return "`" + json.dumps(value, default=str) + "`"
    except TypeError:
        return f"`{value}`"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for info in model.model_fields.values():
            for candidate in _nested(info.annotation):
                walk(candidate)

    walk(root)
    return seen


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _nested(arg)
    return found


def render() -> str:
    lines = [
        "# Environment file reference",
        "",
        "Generated from `plinth/model.py` by `python -m plinth.docgen`; do not edit.",
        "An environment file is `inventory/<name>.yaml`; unknown keys are errors.",
        "",
    ]
    for model in _models(Environment):
        lines += [f"## {model.__name__}", ""]
        if model.__doc__ and model is not Environment:
            lines += [model.__doc__.strip().splitlines()[0], ""]
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            description = " ".join((info.description or "").split())
            lines.append(
                f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | {description} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

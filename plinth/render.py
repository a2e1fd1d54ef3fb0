"""Template rendering: one Jinja environment over ``templates/``.

Template paths mirror the target path (``templates/<component>/etc/...j2``).
Undefined variables are errors, so a template never renders half-filled.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
MANAGED_HEADER = "managed by plinth: local changes are overwritten on the next deploy"


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # config files, not HTML
    )
    env.globals["managed_header"] = MANAGED_HEADER
    return env


def render_template(name: str, **values: Any) -> str:
    """Render ``templates/<name>`` with ``values`` (typed values, not the whole model)."""
    return _environment().get_template(name).render(**values)


def sha1_text(text: str) -> str:
    """sha1 of text as pyinfra's Sha1File fact reports it for the uploaded file."""
    return hashlib.sha1(text.encode()).hexdigest()

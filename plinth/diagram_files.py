"""The diagram as files: DOT, draw.io, and SVG through Graphviz's ``dot``; and the
diagrams committed under docs/diagrams/.

``python -m plinth.diagram_files`` regenerates docs/diagrams/ (a test keeps the DOT and
draw.io files current; the SVG is compared through the DOT committed beside it, since
Graphviz's SVG output differs from one Graphviz release to the next).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from plinth.diagram import build, render_dot, render_drawio
from plinth.lab import topology as lab_topology
from plinth.model import Environment, load_environment, parse_environment

Format = Literal["svg", "drawio", "dot"]
FORMATS: tuple[Format, ...] = ("svg", "drawio", "dot")
SUFFIXES: dict[Format, str] = {"svg": ".svg", "drawio": ".drawio", "dot": ".dot"}

REPO = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO / "docs" / "diagrams"
DOT_TIMEOUT_SECONDS = 60


class DiagramError(Exception):
    """The diagram cannot be drawn; the message says what is missing and what to do."""


def _lab(profile: lab_topology.Profile) -> Environment:
    """The lab's model as ``plinth lab up`` writes it, less this controller's mirror and
    CA bundle (which change no host, VIP or flow)."""
    document = lab_topology.build_environment(
        profile, isolated=lab_topology.isolated_by_default(profile)
    )
    return parse_environment(document, f"lab ({profile} profile)")


DOCUMENTED: dict[str, Callable[[], Environment]] = {
    "example-prod": lambda: load_environment(REPO / "inventory" / "example-prod.yaml"),
    "lab-small": lambda: _lab("small"),
    "lab-full": lambda: _lab("full"),
}
"""The diagrams in docs/diagrams/: file stem -> the environment drawn."""


def svg_from_dot(dot_source: str) -> str:
    """Lay out and draw ``dot_source`` with Graphviz's ``dot``."""
    dot = shutil.which("dot")
    if dot is None:
        raise DiagramError(
            "the SVG is drawn by Graphviz's `dot` program, which is not on PATH: install "
            "Debian's `graphviz` package (apt-get install graphviz), or write the DOT or "
            "draw.io file instead (--format dot|drawio)"
        )
    try:
        done = subprocess.run(
            [dot, "-Tsvg"],
            input=dot_source,
            capture_output=True,
            text=True,
            check=False,
            timeout=DOT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise DiagramError(f"`dot` did not finish within {DOT_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        raise DiagramError(f"`dot` failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def render(env: Environment, fmt: Format) -> str:
    """``env``'s diagram as the text of a ``fmt`` file."""
    diagram = build(env)
    if fmt == "drawio":
        return render_drawio(diagram)
    dot_source = render_dot(diagram)
    return svg_from_dot(dot_source) if fmt == "svg" else dot_source


def documented_files(stem: str, env: Environment) -> dict[Path, str]:
    """The generated text of each committed file whose output does not depend on the
    Graphviz release: the DOT (the SVG's source) and the draw.io file."""
    return {
        DOCS_DIR / f"{stem}.dot": render(env, "dot"),
        DOCS_DIR / f"{stem}.drawio": render(env, "drawio"),
    }


def write_docs() -> list[Path]:
    """Regenerate docs/diagrams/: DOT, draw.io and SVG of every documented environment."""
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, load in DOCUMENTED.items():
        env = load()
        files = documented_files(stem, env)
        files[DOCS_DIR / f"{stem}.svg"] = svg_from_dot(files[DOCS_DIR / f"{stem}.dot"])
        for path, text in files.items():
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_docs():
        print(f"wrote {path.relative_to(REPO)}")

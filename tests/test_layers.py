"""The layers import one way (issue 13): ``plinth.model`` and ``plinth.topology`` (derived
from the model alone) → ``facts`` (live reads, pure parsers) → ``operations`` (converge,
roll) → ``deploy.py`` → ``plinth.status``, ``plinth.outputs`` → ``plinth.cli``. The DC
commands' decisions (``plinth.geo``) read the facts' types and nothing above them.

Every import counts, at module level or inside a function (the status layer imports the
facts lazily) or under ``TYPE_CHECKING``, and so does what the imported repo modules
import in turn: a status module that reached ``operations`` through a helper would pull
the converge code into ``plinth status`` all the same.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("plinth", "facts", "operations")
HIGHER_THAN_FACTS = ("operations", "deploy", "plinth.status", "plinth.outputs", "plinth.cli")

# layer (module name prefix) -> module name prefixes it must not reach
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "plinth.model": ("plinth.topology", "facts", *HIGHER_THAN_FACTS),
    "plinth.topology": ("facts", *HIGHER_THAN_FACTS),
    "facts": HIGHER_THAN_FACTS,
    "plinth.status": ("operations", "deploy", "plinth.cli"),
    "plinth.outputs": ("operations", "deploy", "plinth.cli"),
    # the diagram is drawn from the model alone, like the outputs
    "plinth.diagram": ("facts", *HIGHER_THAN_FACTS),
    # the DC commands' decisions: pure, over the facts' types; the commands that perform
    # them sit above (issue 14)
    "plinth.geo": HIGHER_THAN_FACTS,
}

# (importing module, module it must not import) -> why it stays for now. Keep it short: an
# entry that no longer matches fails the test, so it goes when the import goes.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def repo_modules() -> dict[str, Path]:
    """Module name -> file, for the repo's packages and ``deploy.py``."""
    found = {"deploy": REPO / "deploy.py"}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = repo_modules()


def imports_of(module: str) -> set[str]:
    """The repo modules ``module`` imports anywhere in its file, with the packages whose
    ``__init__`` each import runs."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: the module's package, one level up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    reached: set[str] = set()
    for name in names:
        parts = name.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        reached.update(prefix for prefix in prefixes if prefix in MODULES)
    return reached - {module}


def violations() -> dict[tuple[str, str], list[str]]:
    """Each import against the layers, as (importing module, imported module) -> the chain
    of imports from a module of a checked layer down to it."""
    found: dict[tuple[str, str], list[str]] = {}
    for start in sorted(MODULES):
        layer = next((layer for layer in FORBIDDEN if within(start, layer)), None)
        if layer is None:
            continue
        came_from: dict[str, str | None] = {start: None}
        queue = deque([start])
        while queue:
            current = queue.popleft()
            imported = imports_of(current)
            for name in sorted(imported):
                if any(within(name, f) for f in FORBIDDEN[layer]):
                    # ``from operations.redis import x`` also runs ``operations``: name the
                    # module itself, not its package
                    if not any(other.startswith(name + ".") for other in imported):
                        chain = [current]
                        while (parent := came_from[chain[-1]]) is not None:
                            chain.append(parent)
                        found.setdefault((current, name), [*chain[::-1], name])
                elif name not in came_from:
                    came_from[name] = current
                    queue.append(name)
    return found


def test_every_layer_is_found() -> None:
    for layer in FORBIDDEN:
        assert any(within(m, layer) for m in MODULES), f"no module in layer {layer}"


def test_imports_inside_functions_and_type_checking_blocks_count() -> None:
    imported = imports_of("plinth.status.collect")
    assert "facts.etcd" in imported  # imported inside collect()
    assert "facts.patroni" in imported  # under TYPE_CHECKING (and inside collect())
    assert "plinth.topology.redis" in imported and "plinth.topology" in imported


def test_no_import_runs_back_up_the_layers() -> None:
    found = violations()
    new = {pair: chain for pair, chain in found.items() if pair not in KNOWN_EXCEPTIONS}
    assert not new, "imports against the layers:\n" + "\n".join(
        " -> ".join(chain) for chain in new.values()
    )


def test_every_known_exception_is_still_needed() -> None:
    found = violations()
    stale = [pair for pair in KNOWN_EXCEPTIONS if pair not in found]
    assert not stale, f"no longer imported, remove from KNOWN_EXCEPTIONS: {stale}"

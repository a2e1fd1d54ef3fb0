"""Trust anchors the hosts get from the controller: the platform root, once it exists."""

from __future__ import annotations

from pathlib import Path


def platform_trust_anchors(environment: str, environment_file: Path) -> dict[str, str]:
    """``{file name: PEM}`` of the platform root CA, or nothing before ``pki init``."""
    root = environment_file.parent / environment / "pki" / "root.crt"
    if not root.is_file():
        return {}
    return {f"plinth-{environment}-root.crt": root.read_text()}

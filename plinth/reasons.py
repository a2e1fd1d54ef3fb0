"""Why an operation changes a host, for ``plinth preview``.

pyinfra's plan says *which* operations would run commands on *which* hosts;
operations that know *why* (a certificate expiring, a setting drifted) call
:func:`explain_change` before their first yield, and the preview shows it.
Reasons must never contain secret values.
"""

from __future__ import annotations

from pyinfra import host, logger

MARKER = "plinth-change"


def explain_change(reason: str) -> None:
    """Log ``reason`` for the operation being prepared on the current host."""
    op_name = "?"
    op_hash = getattr(host, "current_op_hash", None)
    if op_hash is not None:
        meta = host.state.op_meta.get(op_hash)
        if meta is not None and meta.names:
            op_name = ", ".join(sorted(meta.names))
    logger.info(f"{host.print_prefix}{MARKER}: {op_name}: {reason}")

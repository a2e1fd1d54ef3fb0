"""The one exception type of the PKI."""

from __future__ import annotations


class PkiError(Exception):
    """An operator-facing PKI failure.

    The message says what went wrong and where (file, datacenter, serial) and, where there is
    one, what to do. It never contains a passphrase or key material.
    """

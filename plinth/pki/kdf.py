"""The one key-derivation rule for everything plinth keeps encrypted with the passphrase.

CA keys (``*.key.enc``) and ``secrets.json`` both derive their encryption key from
``PLINTH_PASSPHRASE`` with scrypt at :data:`STRONG` cost (n=2^17, r=8, p=1: 128 MiB and about
0.4 s per derivation, OWASP's minimum for scrypt). Memory-hard on purpose: the encrypted files
sit in git, so an attacker with a copy can guess offline for as long as they like; scrypt makes
each guess cost memory as well as time, which GPUs and ASICs cannot cheapen much. Anything
cheaper than :data:`STRONG` is reported as weak and rewritten by ``plinth pki rekey``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_LENGTH = 32
SALT_LENGTH = 16


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's parameters: ``n`` (CPU/memory cost, a power of two), ``r`` (block size),
    ``p`` (parallelism). Memory per derivation is ``128 * n * r`` bytes."""

    n: int
    r: int
    p: int

    @property
    def weak(self) -> bool:
        """Cheaper for a guesser than :data:`STRONG` (less memory or less work)."""
        return self.n < STRONG.n or self.r < STRONG.r

    def describe(self) -> str:
        exponent = self.n.bit_length() - 1
        shown = f"2^{exponent}" if self.n == 1 << exponent else str(self.n)
        return f"scrypt n={shown} r={self.r} p={self.p}"

    def check_plausible(self) -> None:
        """Refuse parameters no plinth ever wrote: a damaged or hostile file must not make
        the controller allocate gigabytes or spin for hours before saying so."""
        if not (
            2 <= self.n <= MAXIMUM.n
            and self.n & (self.n - 1) == 0
            and 1 <= self.r <= MAXIMUM.r
            and 1 <= self.p <= MAXIMUM.p
        ):
            raise ValueError(f"implausible scrypt parameters n={self.n} r={self.r} p={self.p}")


STRONG = ScryptCost(n=2**17, r=8, p=1)
# 1 GiB of memory at most: 8x STRONG, room to raise the rule later without refusing files.
MAXIMUM = ScryptCost(n=2**20, r=8, p=4)


# The derived key is cached per (passphrase, salt, cost) for the life of the process: a deploy
# signs dozens of certificates with one intermediate key and opens secrets.json for every
# host, and 0.4 s / 128 MiB each time would dominate it. The cache holds nothing the process
# does not already hold: the passphrase itself stays in memory (environment variable,
# LeafSigner) for the whole run, and the key opens only the file whose salt it was made with.
@functools.lru_cache(maxsize=32)
def derive_key(passphrase: str, salt: bytes, cost: ScryptCost) -> bytes:
    """The 32-byte key scrypt derives from ``passphrase`` and ``salt`` at ``cost``."""
    cost.check_plausible()
    return Scrypt(salt=salt, length=KEY_LENGTH, n=cost.n, r=cost.r, p=cost.p).derive(
        passphrase.encode()
    )

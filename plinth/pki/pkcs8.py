"""CA keys at rest: PKCS#8 ``ENCRYPTED PRIVATE KEY`` with PBES2, scrypt and AES-256-CBC.

Why plinth writes this structure itself instead of using cryptography's
``BestAvailableEncryption``: for PKCS#8, cryptography (48.0 here) writes PBES2 with
PBKDF2-HMAC-SHA256 at 2,048 iterations, OpenSSL's historic default, and offers no way to
choose the KDF or its cost (``encryption_builder()`` serves OpenSSH and PKCS#12 only). 2,048
PBKDF2 iterations cost a GPU next to nothing per guess, and these files sit in git. RFC 8018
(PBES2) with RFC 7914's scrypt is the same standard container with a memory-hard KDF, and
cryptography's own loader reads it, so the file stays an ordinary
``-----BEGIN ENCRYPTED PRIVATE KEY-----`` PEM (``openssl asn1parse`` shows the scrypt
parameters). One caveat: OpenSSL 3.0's command line refuses scrypt above 32 MiB, so
``openssl pkey`` cannot open a key written at :data:`~plinth.pki.kdf.STRONG` cost; plinth can.

Decryption of scrypt files goes through :func:`plinth.pki.kdf.derive_key` (cached per file and
passphrase) so a deploy pays the derivation once per key, not once per signature. Every other
encryption (the PBKDF2 files earlier plinth versions wrote) is read by cryptography's loader
and reported weak by :func:`protection` until ``plinth pki rekey`` rewrites it.
"""

from __future__ import annotations

import base64
import binascii
import os
import textwrap
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from plinth.pki.kdf import SALT_LENGTH, STRONG, ScryptCost, derive_key

_BEGIN = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_END = b"-----END ENCRYPTED PRIVATE KEY-----"

_SEQUENCE, _INTEGER, _OCTETS, _OID = 0x30, 0x02, 0x04, 0x06


class KeyFileError(ValueError):
    """An encrypted key file cannot be opened; the message never holds key material."""


class DamagedKey(KeyFileError):
    """The file is not a well-formed encrypted PKCS#8 PEM."""


class UnencryptedKey(KeyFileError):
    """The file holds a private key in clear."""


class WrongPassphrase(KeyFileError):
    """The framing is fine but the passphrase does not decrypt it."""


@dataclass(frozen=True)
class Protection:
    """How a key file is encrypted: ``"scrypt n=2^17 r=8 p=1"``, ``"PBKDF2 2048 iterations"``."""

    description: str
    weak: bool


def seal(key: ec.EllipticCurvePrivateKey, passphrase: str, cost: ScryptCost = STRONG) -> bytes:
    """``key`` as an ``ENCRYPTED PRIVATE KEY`` PEM: PBES2, scrypt at ``cost``, AES-256-CBC."""
    salt, iv = os.urandom(SALT_LENGTH), os.urandom(16)
    clear = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    padder = padding.PKCS7(128).padder()
    padded = padder.update(clear) + padder.finalize()
    encryptor = Cipher(
        algorithms.AES(derive_key(passphrase, salt, cost)), modes.CBC(iv)
    ).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    scrypt_params = _tlv(
        _SEQUENCE,
        _tlv(_OCTETS, salt) + _integer(cost.n) + _integer(cost.r) + _integer(cost.p),
    )
    algorithm = _tlv(
        _SEQUENCE,
        _PBES2
        + _tlv(
            _SEQUENCE,
            _tlv(_SEQUENCE, _SCRYPT + scrypt_params)
            + _tlv(_SEQUENCE, _AES256_CBC + _tlv(_OCTETS, iv)),
        ),
    )
    der = _tlv(_SEQUENCE, algorithm + _tlv(_OCTETS, ciphertext))
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return _BEGIN + b"\n" + body.encode() + b"\n" + _END + b"\n"


def protection(pem: bytes) -> Protection:
    """How ``pem`` is protected, read from its public parameters (no passphrase needed)."""
    envelope = _parse(pem)
    if envelope.scrypt is not None:
        return Protection(envelope.scrypt.describe(), envelope.scrypt.weak)
    if envelope.pbkdf2_iterations is not None:
        return Protection(f"PBKDF2 {envelope.pbkdf2_iterations} iterations", weak=True)
    return Protection("an unknown key derivation", weak=True)


def unseal(pem: bytes, passphrase: str) -> ec.EllipticCurvePrivateKey:
    """Decrypt a CA key written by :func:`seal` or by an earlier plinth (PBKDF2)."""
    envelope = _parse(pem)
    if envelope.scrypt is not None and envelope.aes256_cbc_iv is not None:
        key = _unseal_scrypt(envelope, envelope.scrypt, envelope.aes256_cbc_iv, passphrase)
    else:
        key = _unseal_with_cryptography(pem, passphrase)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"holds a {type(key).__name__}, expected an ECDSA CA key")
    return key


@dataclass(frozen=True)
class _Envelope:
    scrypt: ScryptCost | None
    scrypt_salt: bytes
    pbkdf2_iterations: int | None
    aes256_cbc_iv: bytes | None
    ciphertext: bytes


def _parse(pem: bytes) -> _Envelope:
    text = pem.strip()
    if not text.startswith(_BEGIN):
        if b"PRIVATE KEY-----" in text and b"ENCRYPTED" not in text:
            raise UnencryptedKey("holds an unencrypted private key")
        raise DamagedKey("not an encrypted PEM key")
    if not text.endswith(_END):
        raise DamagedKey("not an encrypted PEM key")
    try:
        der = base64.b64decode(b"".join(text[len(_BEGIN) : -len(_END)].split()), validate=True)
        (algorithm, ciphertext) = _expect(_children(_expect_one(der, _SEQUENCE)), 2)
        (scheme_oid, scheme_params) = _expect(_children(_value(algorithm, _SEQUENCE)), 2)
        if _value(scheme_oid, _OID) != _PBES2_OID:
            return _Envelope(None, b"", None, None, _value(ciphertext, _OCTETS))
        (kdf, cipher) = _expect(_children(_value(scheme_params, _SEQUENCE)), 2)
        (kdf_oid, kdf_params) = _expect(_children(_value(kdf, _SEQUENCE)), 2)
        params = _children(_value(kdf_params, _SEQUENCE))
        cipher_fields = _children(_value(cipher, _SEQUENCE))
        iv = None
        if _value(cipher_fields[0], _OID) == _AES256_CBC_OID:
            iv = _value(cipher_fields[1], _OCTETS)
        scrypt = None
        salt = b""
        iterations = None
        if _value(kdf_oid, _OID) == _SCRYPT_OID:
            salt = _value(params[0], _OCTETS)
            scrypt = ScryptCost(*(_int_value(p) for p in params[1:4]))
        elif _value(kdf_oid, _OID) == _PBKDF2_OID:
            iterations = _int_value(params[1])
        return _Envelope(scrypt, salt, iterations, iv, _value(ciphertext, _OCTETS))
    except (ValueError, IndexError, binascii.Error, TypeError):
        raise DamagedKey("not an encrypted PEM key") from None


def _unseal_scrypt(
    envelope: _Envelope, cost: ScryptCost, iv: bytes, passphrase: str
) -> PrivateKeyTypes:
    try:
        cost.check_plausible()
    except ValueError as exc:
        raise DamagedKey(str(exc)) from None
    if len(iv) != 16 or not envelope.ciphertext or len(envelope.ciphertext) % 16:
        raise DamagedKey("not an encrypted PEM key")
    kek = derive_key(passphrase, envelope.scrypt_salt, cost)
    decryptor = Cipher(algorithms.AES(kek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(envelope.ciphertext) + decryptor.finalize()
    try:
        unpadder = padding.PKCS7(128).unpadder()
        clear = unpadder.update(padded) + unpadder.finalize()
        return serialization.load_der_private_key(clear, None)
    except (ValueError, TypeError):
        # CBC has no tag: a wrong key shows up as bad padding or garbage DER, the same way
        # cryptography's own loader tells "Incorrect password".
        raise WrongPassphrase("wrong passphrase") from None


def _unseal_with_cryptography(pem: bytes, passphrase: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, passphrase.encode())
    except ValueError as exc:
        # cryptography says "Incorrect password" only when the PEM/ASN.1 framing was fine
        # and decryption failed; anything else is a damaged file.
        if "password" in str(exc).lower():
            raise WrongPassphrase("wrong passphrase") from None
        raise DamagedKey("not an encrypted PEM key") from None
    except TypeError:
        raise UnencryptedKey("holds an unencrypted private key") from None


# DER, only as much as this one structure needs.


def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _integer(value: int) -> bytes:
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _oid_body(dotted: str) -> bytes:
    first, second, *rest = (int(part) for part in dotted.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return bytes(body)


_PBES2_OID = _oid_body("1.2.840.113549.1.5.13")
_PBKDF2_OID = _oid_body("1.2.840.113549.1.5.12")
_SCRYPT_OID = _oid_body("1.3.6.1.4.1.11591.4.11")
_AES256_CBC_OID = _oid_body("2.16.840.1.101.3.4.1.42")
_PBES2, _SCRYPT, _AES256_CBC = (_tlv(_OID, o) for o in (_PBES2_OID, _SCRYPT_OID, _AES256_CBC_OID))

_Node = tuple[int, bytes]


def _read(data: bytes, position: int) -> tuple[_Node, int]:
    tag, size = data[position], data[position + 1]
    position += 2
    if size & 0x80:
        count = size & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        size = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + size
    if end > len(data):
        raise ValueError("truncated DER")
    return (tag, data[position:end]), end


def _children(value: bytes) -> list[_Node]:
    nodes: list[_Node] = []
    position = 0
    while position < len(value):
        node, position = _read(value, position)
        nodes.append(node)
    return nodes


def _expect_one(data: bytes, tag: int) -> bytes:
    node, end = _read(data, 0)
    if end != len(data):
        raise ValueError("trailing data")
    return _value(node, tag)


def _expect(nodes: list[_Node], count: int) -> list[_Node]:
    if len(nodes) != count:
        raise ValueError("unexpected structure")
    return nodes


def _value(node: _Node, tag: int) -> bytes:
    if node[0] != tag:
        raise ValueError("unexpected tag")
    return node[1]


def _int_value(node: _Node) -> int:
    value = int.from_bytes(_value(node, _INTEGER), "big", signed=True)
    if value < 1:
        raise ValueError("non-positive parameter")
    return value

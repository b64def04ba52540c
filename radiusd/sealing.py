"""Secrets at rest: one-time passwords and SMS bodies are sealed with AES-GCM.

CHAP (RFC 2865 §2.2) needs the clear password to verify, so a hash alone will not do;
the code is stored encrypted and never written in clear text (DESIGN: password
lifecycle). The key comes from `[otp] key` or from `[otp] key_file`, created with
mode 0600 on first start.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from radiusd.config import ConfigError, OtpConfig

NONCE = 12


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_config(cls, otp: OtpConfig, create: bool = True) -> Sealer:
        if otp.key:
            try:
                return cls(base64.b64decode(otp.key, validate=True))
            except (binascii.Error, ValueError):
                raise ConfigError(
                    "otp.key: must be 32 random bytes in base64 (make one with: "
                    "python3 -c 'import os,base64;"
                    "print(base64.b64encode(os.urandom(32)).decode())')"
                ) from None
        return cls(load_key_file(otp.key_file, create=create))

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], aad)
        except InvalidTag:
            raise ValueError("sealed value does not open with this key") from None


def load_key_file(path: str, create: bool = True) -> bytes:
    p = Path(path)
    if not p.exists():
        if not create:
            raise ConfigError(f"otp.key_file: {path} does not exist (start `radiusd serve` once)")
        p.parent.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return load_key_file(path, create=False)
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        return key
    try:
        key = base64.b64decode(p.read_text().strip(), validate=True)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ConfigError(f"otp.key_file: {path} is not a base64 key") from None
    if len(key) != 32:
        raise ConfigError(f"otp.key_file: {path} must hold 32 bytes in base64")
    return key

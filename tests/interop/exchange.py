"""Messages and parsers shared by the interop tests (no process management
here: that is ``peers.py``)."""

from __future__ import annotations

import base64
import random
import string

#: Characters of a text message body: no control characters, and never a
#: leading letter the openssl tools treat as a command ('Q', 'R', ...):
#: every message starts with "m<index> ".
_TEXT = string.ascii_letters + string.digits + " .,:;!?-_+=/()[]{}<>@#$%^&*~"


def text_messages(count: int, seed: int, max_len: int = 900) -> list[bytes]:
    """``count`` distinct newline-terminated text lines of 1..``max_len`` body
    characters (the line-based CLI tools send and print whole lines)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = 1 if i == 0 else max_len if i == 1 else rng.randint(1, max_len)
        body = "".join(rng.choice(_TEXT) for _ in range(n))
        out.append(f"m{i:04d} {body}\n".encode("ascii"))
    return out


def binary_messages(count: int, seed: int, max_len: int = 1200) -> list[bytes]:
    """``count`` distinct binary payloads of 1..``max_len`` bytes, every byte
    value possible (NUL, CR, LF, 0xff...), first 4 bytes = index."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = 0 if i == 0 else max_len - 4 if i == 1 else rng.randint(0, max_len - 4)
        out.append(i.to_bytes(4, "big") + bytes(rng.getrandbits(8) for _ in range(n)))
    return out


def session_protocol(pem_body: bytes) -> int:
    """The protocol version (e.g. 0xFEFD for DTLS 1.2) stored in an OpenSSL
    "SSL SESSION PARAMETERS" PEM body (base64 of DER: SEQUENCE { INTEGER 1,
    INTEGER ssl_version, ... })."""
    der = base64.b64decode(pem_body)
    if der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    # INTEGER session-format version (1)
    if der[pos] != 0x02:
        raise ValueError("no version INTEGER")
    pos += 2 + der[pos + 1]
    if der[pos] != 0x02:
        raise ValueError("no ssl_version INTEGER")
    length = der[pos + 1]
    return int.from_bytes(der[pos + 2:pos + 2 + length], "big")


DTLS1_2_VERSION = 0xFEFD

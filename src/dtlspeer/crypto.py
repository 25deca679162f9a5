"""Keys, certificates and random bytes: Godot 4's ``Crypto``, ``CryptoKey`` and
``X509Certificate``, backed by Mbed TLS.

Where we differ from Godot (on purpose):

* Methods that return ``Error`` in Godot raise a :mod:`dtlspeer.errors`
  exception and return ``None``. File errors are the built-in ``OSError``
  subclasses raised by :func:`open` (``FileNotFoundError``, ...).
* ``X509Certificate.load*`` *replaces* the content (Godot appends), and a
  failed load leaves the object unchanged.
* ``X509Certificate.save*`` writes every certificate of a chain (Godot writes
  the leaf N times) and ``save_to_string`` has no trailing NUL.
* PEM and DER are detected on load; bytes are accepted wherever DER makes
  sense. DER is written for a ``.der`` path or ``format="der"``.
* Keys and certificates that a :class:`~dtlspeer.tls_options.TLSOptions`
  uses are locked: loading new content into them raises
  :class:`~dtlspeer.errors.AlreadyInUseError` (Godot's ``ERR_ALREADY_IN_USE``)
  until every such ``TLSOptions`` is gone.
* Read-only properties Godot lacks: subject, issuer, validity, serial,
  subject alternative names, SHA-256 fingerprint, CA flag, key type/size.

Limits: generated RSA keys are 2048..4096 bits (multiples of 8, exponent
65537); EC keys use P-256, P-384 or P-521. Loading accepts any RSA key Mbed
TLS parses and EC keys on those three curves; password-protected keys are
refused (as in Godot). Inputs are capped at 1 MiB for keys and 16 MiB for
certificate bundles.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import ipaddress
import os
import secrets
import ssl
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional, Union

from . import errors
from ._binding import check, ffi, lib, to_bytes
from .hashing import DIGEST_SIZES, HashType, HMACContext, hash_type_of

__all__ = ["Crypto", "CryptoKey", "X509Certificate"]

PathLike = Union[str, "os.PathLike[str]"]

_CURVES = {
    "P-256": lib.DP_CURVE_P256,
    "SECP256R1": lib.DP_CURVE_P256,
    "PRIME256V1": lib.DP_CURVE_P256,
    "P-384": lib.DP_CURVE_P384,
    "SECP384R1": lib.DP_CURVE_P384,
    "P-521": lib.DP_CURVE_P521,
    "SECP521R1": lib.DP_CURVE_P521,
}
_CURVE_NAMES = {lib.DP_CURVE_P256: "P-256", lib.DP_CURVE_P384: "P-384", lib.DP_CURVE_P521: "P-521"}
_SAN_KINDS = {lib.DP_SAN_DNS: "DNS", lib.DP_SAN_IP: "IP Address", lib.DP_SAN_URI: "URI",
              lib.DP_SAN_EMAIL: "email"}
_FIRST_GUESS = 4096  # output buffer tried first; the C side reports the size it needs
_MAX_DNS_NAME = 253


def _read_file(path: PathLike, what: str) -> bytes:
    if not isinstance(path, (str, os.PathLike)):
        raise errors.ArgumentTypeError(f"{what} path must be str or os.PathLike, "
                                       f"not {type(path).__name__}")
    with open(path, "rb") as f:
        return f.read()


_NEW_FILE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def _write_file(path: PathLike, data: bytes, private: bool) -> None:
    """Write ``data`` to ``path`` as a new file renamed over the old one.

    A temporary file is created in the target's directory with
    O_EXCL|O_NOFOLLOW (never an existing file, never through a symlink),
    mode 0600 for private keys (0644 otherwise, less the umask), written,
    flushed to disk and ``os.replace``d in: an existing file's permissions
    are never inherited, a symlink at ``path`` is replaced itself (its
    target is untouched), and readers see the old or the new content,
    never a mix. The temporary is removed if anything fails."""
    if not isinstance(path, (str, os.PathLike)):
        raise errors.ArgumentTypeError(
            f"path must be str or os.PathLike, not {type(path).__name__}")
    target = os.fspath(path)
    directory, name = os.path.split(target)
    mode = 0o600 if private else 0o644
    for _ in range(100):
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temporary, _NEW_FILE_FLAGS, mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 random names all taken
        raise FileExistsError(f"cannot create a temporary file next to {target!r}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _check_rdn_string(name: str) -> None:
    """Refuse RDN strings that Mbed TLS would silently turn into another
    name: a second value for one attribute type (it keeps only one, so
    ``CN=x,O=a,CN=evil`` became ``CN=evil``), and an escaped backslash right
    before a separating comma (it reads ``\\\\,`` as an escaped comma).
    Everything else passes unchanged: ``CN=x,O=y,C=IT`` and escaped values
    such as ``O=a\\,b`` or ``O=a\\2Cb`` (RFC 4514) are Godot's format."""
    seen: set[str] = set()
    part_start, i = 0, 0
    while i <= len(name):
        ch = name[i] if i < len(name) else ","
        if ch == "\\" and i + 1 < len(name):
            if name[i + 1] == "\\" and name[i + 2 : i + 3] == ",":
                raise errors.InvalidArgumentError(
                    f"issuer_name {name!r}: write a backslash that ends a value as \\5C")
            i += 2
            continue
        if ch == ",":
            kind = name[part_start:i].split("=", 1)[0].strip().upper()
            if kind in seen:
                raise errors.InvalidArgumentError(
                    f"issuer_name {name!r} repeats {kind}=: Mbed TLS keeps one value per "
                    "attribute type (escape commas inside values as \\, or \\2C)")
            seen.add(kind)
            part_start = i + 1
        i += 1


def _choose_der(path: Optional[PathLike], format: Optional[str]) -> bool:
    if format is None:
        return path is not None and Path(os.fspath(path)).suffix.lower() == ".der"
    if not isinstance(format, str):
        raise errors.ArgumentTypeError(
            f"format must be 'pem' or 'der', not {type(format).__name__}")
    if format.lower() not in ("pem", "der"):
        raise errors.InvalidArgumentError(f"format must be 'pem' or 'der', not {format!r}")
    return format.lower() == "der"


def _text_or_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("ascii")
        except UnicodeEncodeError:
            raise errors.DecodeError(f"{name}: PEM text must be ASCII") from None
    return to_bytes(value, name)


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise errors.ArgumentTypeError(f"{name} must be bool, not {type(value).__name__}")
    return value


def _sized_output(call: Any, context: str) -> bytes:
    """Run ``call(buf, buflen, needed_ptr)`` once with a first guess, and once
    more with the size the C side asked for."""
    needed = ffi.new("size_t *")
    size = _FIRST_GUESS
    for _ in range(2):
        buf = ffi.new("unsigned char[]", size)
        code = call(buf, size, needed)
        if code != lib.DP_ERR_BUFFER_TOO_SMALL:
            n = check(code, context)
            return bytes(ffi.buffer(buf, n))
        size = max(needed[0], size * 2)
    raise errors.LimitError(f"{context}: output keeps growing")  # pragma: no cover


class _Locked:
    """Shared machinery: a per-object lock around native calls and a use count
    that TLSOptions raises while it relies on the object's content."""

    _mutex: threading.Lock
    _users: int

    def _init_lock(self) -> None:
        self._mutex = threading.Lock()
        self._users = 0

    def _acquire_use(self) -> None:
        with self._mutex:
            self._users += 1

    def _release_use(self) -> None:
        with self._mutex:
            self._users -= 1

    def _check_replaceable(self) -> None:
        if self._users > 0:
            raise errors.AlreadyInUseError(
                f"this {type(self).__name__} is used by a TLSOptions; load into a new object"
            )


class CryptoKey(_Locked):
    """An RSA or EC key, private or public only (Godot ``CryptoKey``).

    Differences from Godot: methods raise instead of returning ``Error``;
    PEM or DER is detected on load and ``bytes`` are accepted;
    ``save``/``save_to_der`` can write DER; loading a private key with
    ``public_only=True`` keeps its public half (Godot refuses it); read-only
    ``key_type``, ``key_size`` and ``curve`` describe the key.
    """

    def __init__(self) -> None:
        """Create an empty key (load or generate one to use it)."""
        self._init_lock()
        handle = lib.dp_key_new()
        if handle == ffi.NULL:
            raise errors.OutOfMemoryError("cannot allocate a key")
        self._handle = ffi.gc(handle, lib.dp_key_free)

    # -- loading -----------------------------------------------------------

    def load(self, path: PathLike, public_only: bool = False) -> None:
        """Load a PEM or DER key file (PKCS#1, PKCS#8, SEC1 or SubjectPublicKeyInfo).

        Raises ``FileNotFoundError``/``OSError`` for file problems,
        :class:`~dtlspeer.errors.DecodeError` for malformed or
        password-protected keys, :class:`~dtlspeer.errors.UnsupportedError`
        for algorithms or curves we do not support."""
        _check_bool(public_only, "public_only")
        self._parse(_read_file(path, "key"), public_only, f"CryptoKey.load({os.fspath(path)!r})")

    def load_from_string(self, string_key: Union[str, bytes], public_only: bool = False) -> None:
        """Load a key from PEM text (``str``) or PEM/DER ``bytes``; errors as :meth:`load`."""
        _check_bool(public_only, "public_only")
        self._parse(_text_or_bytes(string_key, "string_key"), public_only,
                    "CryptoKey.load_from_string")

    def _parse(self, data: bytes, public_only: bool, context: str) -> None:
        if not data:
            raise errors.DecodeError(f"{context}: empty input")
        with self._mutex:
            self._check_replaceable()
            check(lib.dp_key_parse(self._handle, data, len(data), int(public_only)), context)

    # -- saving ------------------------------------------------------------

    def save(self, path: PathLike, public_only: bool = False, *,
             format: Optional[str] = None) -> None:
        """Write the key to ``path``: DER for a ``.der`` suffix or ``format="der"``,
        PEM otherwise. Private keys are created with mode 0600."""
        _check_bool(public_only, "public_only")
        der = _choose_der(path, format)
        data = self._write(der, public_only, "CryptoKey.save")
        _write_file(path, data, private=not (public_only or self.is_public_only()))

    def save_to_string(self, public_only: bool = False) -> str:
        """The key as PEM text. Raises :class:`~dtlspeer.errors.StateError` for an
        empty key, or a public-only key asked for its private part (Godot
        returns "")."""
        _check_bool(public_only, "public_only")
        return self._write(False, public_only, "CryptoKey.save_to_string").decode("ascii")

    def save_to_der(self, public_only: bool = False) -> bytes:
        """The key as DER bytes (ours; Godot only writes PEM strings)."""
        _check_bool(public_only, "public_only")
        return self._write(True, public_only, "CryptoKey.save_to_der")

    def _write(self, der: bool, public_only: bool, context: str) -> bytes:
        fmt = lib.DP_FORMAT_DER if der else lib.DP_FORMAT_PEM
        if not public_only and self.is_public_only():
            raise errors.StateError(
                f"{context}: the key has no private part; pass public_only=True")
        with self._mutex:
            return _sized_output(
                lambda buf, size, needed: lib.dp_key_write(
                    self._handle, fmt, int(public_only), buf, size, needed),
                context,
            )

    # -- description -------------------------------------------------------

    def _info(self) -> Any:
        info = ffi.new("dp_key_info *")
        with self._mutex:
            check(lib.dp_key_get_info(self._handle, info), "CryptoKey")
        return info

    def is_public_only(self) -> bool:
        """True when the key holds no private part (False for an empty key, as Godot)."""
        return bool(self._info().public_only)

    def is_empty(self) -> bool:
        """True until a key is loaded or generated (ours)."""
        return bool(self._info().type == lib.DP_KEY_TYPE_NONE)

    @property
    def key_type(self) -> Optional[str]:
        """``"RSA"``, ``"EC"``, or ``None`` for an empty key (ours)."""
        kind = self._info().type
        return {lib.DP_KEY_TYPE_RSA: "RSA", lib.DP_KEY_TYPE_EC: "EC"}.get(kind)

    @property
    def key_size(self) -> int:
        """Size in bits (RSA modulus or EC curve), 0 for an empty key (ours)."""
        return int(self._info().bits)

    @property
    def curve(self) -> Optional[str]:
        """``"P-256"``, ``"P-384"`` or ``"P-521"`` for EC keys, else ``None`` (ours)."""
        return _CURVE_NAMES.get(self._info().curve)

    def __repr__(self) -> str:
        info = self._info()
        if info.type == lib.DP_KEY_TYPE_NONE:
            return "<CryptoKey empty>"
        kind = self.key_type
        extra = f" {_CURVE_NAMES.get(info.curve)}" if info.type == lib.DP_KEY_TYPE_EC else ""
        part = "public" if info.public_only else "private"
        return f"<CryptoKey {kind}-{info.bits}{extra} {part}>"


class X509Certificate(_Locked):
    """An X.509 certificate or a chain of them, leaf first (Godot ``X509Certificate``).

    Differences from Godot: loading replaces the content (Godot appends) and
    a failed load changes nothing; saving writes every certificate of the
    chain, without a trailing NUL; DER and ``bytes`` accepted; ``len()`` and
    iteration give the chain's certificates (each a one-certificate
    ``X509Certificate``); read-only properties describe the leaf.
    """

    def __init__(self) -> None:
        """Create an empty certificate (load one to use it)."""
        self._init_lock()
        handle = lib.dp_cert_new()
        if handle == ffi.NULL:
            raise errors.OutOfMemoryError("cannot allocate a certificate")
        self._handle = ffi.gc(handle, lib.dp_cert_free)
        self._skipped = 0

    # -- loading -----------------------------------------------------------

    def load(self, path: PathLike) -> None:
        """Load a PEM file (one or more certificates) or a DER file (one),
        replacing the content. Raises ``FileNotFoundError``/``OSError`` for file
        problems and :class:`~dtlspeer.errors.DecodeError` if any certificate
        in it does not parse."""
        self._parse(_read_file(path, "certificate"), False,
                    f"X509Certificate.load({os.fspath(path)!r})")

    def load_from_string(self, string: Union[str, bytes]) -> None:
        """Load from PEM text (``str``) or PEM/DER ``bytes``; errors as :meth:`load`."""
        self._parse(_text_or_bytes(string, "string"), False, "X509Certificate.load_from_string")

    def _parse(self, data: bytes, allow_partial: bool, context: str) -> None:
        if not data:
            raise errors.DecodeError(f"{context}: empty input")
        skipped = ffi.new("size_t *")
        with self._mutex:
            self._check_replaceable()
            check(lib.dp_cert_parse(self._handle, data, len(data), int(allow_partial), skipped),
                  context)
            self._skipped = int(skipped[0])

    @classmethod
    def from_system_store(cls) -> X509Certificate:
        """The operating system's trusted CA certificates (ours; Godot uses its
        own bundle), found through :func:`ssl.get_default_verify_paths`.

        Certificates Mbed TLS cannot parse are skipped and counted in
        :attr:`skipped_count`. Raises :class:`~dtlspeer.errors.CertificateError`
        if no certificate could be loaded."""
        paths = ssl.get_default_verify_paths()
        blobs: list[bytes] = []
        for cafile in (paths.cafile, paths.openssl_cafile):
            if cafile and os.path.isfile(cafile):
                blobs.append(_read_file(cafile, "CA bundle"))
                break
        if not blobs:
            for capath in (paths.capath, paths.openssl_capath):
                if capath and os.path.isdir(capath):
                    for entry in sorted(os.scandir(capath), key=lambda e: e.name):
                        if entry.is_file() and not entry.name.startswith("."):
                            try:
                                blob = _read_file(entry.path, "CA file")
                            except OSError:
                                continue
                            if b"-----BEGIN CERTIFICATE-----" in blob:
                                blobs.append(blob)
                    break
        bundle = b"\n".join(blobs)
        store = cls()
        if not bundle:
            raise errors.CertificateError("no system CA certificates found "
                                          f"(looked at {paths.cafile!r}, {paths.capath!r})")
        store._parse(bundle, True, "X509Certificate.from_system_store")
        return store

    # -- saving ------------------------------------------------------------

    def save(self, path: PathLike, *, format: Optional[str] = None) -> None:
        """Write the chain as PEM, or DER for a ``.der`` path or ``format="der"``.
        DER holds one certificate, so a longer chain raises
        :class:`~dtlspeer.errors.InvalidArgumentError`."""
        if _choose_der(path, format):
            if len(self) > 1:
                raise errors.InvalidArgumentError(
                    "DER holds a single certificate; save a chain as PEM")
            data = self.save_to_der()
        else:
            data = self.save_to_string().encode("ascii")
        _write_file(path, data, private=False)

    def save_to_string(self) -> str:
        """Every certificate of the chain as PEM, leaf first. Raises
        :class:`~dtlspeer.errors.StateError` when empty (Godot returns "")."""
        return "".join(ssl.DER_cert_to_PEM_cert(self._der(i)) for i in range(self._count()))

    def save_to_der(self, index: int = 0) -> bytes:
        """DER of certificate ``index`` of the chain (ours)."""
        return self._der(index)

    # -- chain -------------------------------------------------------------

    def _count(self) -> int:
        with self._mutex:
            n = check(lib.dp_cert_count(self._handle), "X509Certificate")
        if n == 0:
            raise errors.StateError("the X509Certificate is empty")
        return n

    def __len__(self) -> int:
        """Number of certificates in the chain (0 when empty)."""
        with self._mutex:
            return check(lib.dp_cert_count(self._handle), "X509Certificate")

    def __iter__(self) -> Iterator[X509Certificate]:
        """Each certificate of the chain as its own X509Certificate, leaf first."""
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> X509Certificate:
        """Certificate ``index`` of the chain as its own X509Certificate."""
        if not isinstance(index, int) or isinstance(index, bool):
            raise errors.ArgumentTypeError("index must be int")
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("certificate index out of range")
        single = X509Certificate()
        single.load_from_string(self._der(index))
        return single

    @property
    def skipped_count(self) -> int:
        """Certificates skipped because they did not parse (only
        :meth:`from_system_store` skips; other loads fail instead)."""
        return self._skipped

    def _der(self, index: int) -> bytes:
        if not isinstance(index, int) or isinstance(index, bool):
            raise errors.ArgumentTypeError("index must be int")
        count = self._count()
        if not 0 <= index < count:
            raise IndexError("certificate index out of range")
        with self._mutex:
            return _sized_output(
                lambda buf, size, needed: lib.dp_cert_der(self._handle, index, buf, size, needed),
                "X509Certificate")

    # -- leaf properties ---------------------------------------------------

    def _name(self, which: int) -> str:
        self._count()
        for size in (1024, 65536):
            buf = ffi.new("char[]", size)
            with self._mutex:
                code = lib.dp_cert_name(self._handle, 0, which, buf, size)
            if code != lib.DP_ERR_BUFFER_TOO_SMALL:
                check(code, "X509Certificate")
                name: str = ffi.string(buf, code).decode("utf-8", "replace")
                return name
        raise errors.LimitError("distinguished name longer than 64 KiB")

    @property
    def subject(self) -> str:
        """Subject distinguished name of the leaf, e.g. ``"CN=x, O=y, C=IT"``."""
        return self._name(0)

    @property
    def issuer(self) -> str:
        """Issuer distinguished name of the leaf."""
        return self._name(1)

    def _cert_info(self) -> Any:
        self._count()
        info = ffi.new("dp_cert_info *")
        with self._mutex:
            check(lib.dp_cert_get_info(self._handle, 0, info), "X509Certificate")
        return info

    @staticmethod
    def _time(parts: Any) -> datetime.datetime:
        try:
            year, month, day, hour, minute, second = (int(p) for p in parts)
            return datetime.datetime(year, month, day, hour, minute, second,
                                     tzinfo=datetime.timezone.utc)
        except ValueError as exc:
            raise errors.DecodeError(f"certificate validity date out of range: {exc}") from None

    @property
    def not_before(self) -> datetime.datetime:
        """Start of the leaf's validity (timezone-aware, UTC)."""
        return self._time(self._cert_info().not_before)

    @property
    def not_after(self) -> datetime.datetime:
        """End of the leaf's validity (timezone-aware, UTC)."""
        return self._time(self._cert_info().not_after)

    @property
    def is_ca(self) -> bool:
        """True when the leaf's basicConstraints say CA:TRUE."""
        return bool(self._cert_info().is_ca)

    @property
    def version(self) -> int:
        """X.509 version of the leaf (3 for v3)."""
        return int(self._cert_info().version)

    @property
    def serial_number(self) -> int:
        """Serial number of the leaf (DER INTEGER, so it may be negative in broken certificates)."""
        self._count()
        with self._mutex:
            raw = _sized_output(
                lambda buf, size, needed: lib.dp_cert_serial(self._handle, 0, buf, size, needed),
                "X509Certificate")
        return int.from_bytes(raw, "big", signed=True)

    @property
    def subject_alt_names(self) -> tuple[tuple[str, str], ...]:
        """The leaf's subjectAltName entries as ``(kind, value)`` pairs, kind being
        ``"DNS"``, ``"IP Address"``, ``"URI"`` or ``"email"`` (as in
        :meth:`ssl.SSLSocket.getpeercert`); other kinds are left out."""
        self._count()
        with self._mutex:
            raw = _sized_output(
                lambda buf, size, needed: lib.dp_cert_san_list(self._handle, 0, buf, size, needed),
                "X509Certificate")
        out = []
        pos = 0
        while pos + 3 <= len(raw):
            kind = raw[pos]
            length = int.from_bytes(raw[pos + 1:pos + 3], "big")
            value = raw[pos + 3:pos + 3 + length]
            pos += 3 + length
            if kind == lib.DP_SAN_IP:
                if len(value) not in (4, 16):
                    continue  # malformed entry: not an address
                text = str(ipaddress.ip_address(value))
            else:
                text = value.decode("ascii", "replace")
            out.append((_SAN_KINDS[kind], text))
        return tuple(out)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the leaf's DER (32 bytes), computed by Mbed TLS. Compare with
        ``openssl x509 -fingerprint -sha256`` as ``fingerprint.hex(":").upper()``."""
        self._count()
        out = ffi.new("unsigned char[]", lib.DP_SHA256_LEN)
        with self._mutex:
            n = check(lib.dp_cert_fingerprint_sha256(self._handle, 0, out, lib.DP_SHA256_LEN),
                      "X509Certificate")
        return bytes(ffi.buffer(out, n))

    @property
    def public_key(self) -> CryptoKey:
        """The leaf's public key as a new public-only CryptoKey."""
        self._count()
        key = CryptoKey()
        with self._mutex:
            check(lib.dp_cert_public_key(self._handle, 0, key._handle), "X509Certificate")
        return key

    def __repr__(self) -> str:
        n = len(self)
        if n == 0:
            return "<X509Certificate empty>"
        more = f" (+{n - 1} in chain)" if n > 1 else ""
        return f"<X509Certificate {self.subject!r}{more}>"


def _check_date(value: Any, name: str) -> datetime.datetime:
    if not isinstance(value, str):
        raise errors.ArgumentTypeError(f"{name} must be str, not {type(value).__name__}")
    if len(value) != 14 or not value.isdigit() or not value.isascii():
        raise errors.InvalidArgumentError(f"{name} must be YYYYMMDDhhmmss, not {value!r}")
    try:
        return datetime.datetime.strptime(value, "%Y%m%d%H%M%S")
    except ValueError:
        raise errors.InvalidArgumentError(f"{name} is not a valid date: {value!r}") from None


def _san_records(dns_names: Iterable[str], ip_addresses: Iterable[Any]) -> bytes:
    if isinstance(dns_names, (str, bytes)) or isinstance(ip_addresses, (str, bytes)):
        raise errors.ArgumentTypeError("dns_names and ip_addresses must be sequences, not strings")
    records = bytearray()
    count = 0
    for name in dns_names:
        if not isinstance(name, str):
            raise errors.ArgumentTypeError(f"DNS names must be str, not {type(name).__name__}")
        if (not name or len(name) > _MAX_DNS_NAME or not name.isascii()
                or any(c.isspace() or not c.isprintable() for c in name)):
            raise errors.InvalidArgumentError(f"not a valid DNS name: {name!r}")
        raw = name.encode("ascii")
        records += bytes([lib.DP_SAN_DNS]) + len(raw).to_bytes(2, "big") + raw
        count += 1
    for addr in ip_addresses:
        if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            packed = addr.packed
        elif isinstance(addr, str):
            try:
                packed = ipaddress.ip_address(addr).packed
            except ValueError:
                raise errors.InvalidArgumentError(f"not an IP address: {addr!r}") from None
        else:
            raise errors.ArgumentTypeError(
                f"IP addresses must be str or ipaddress objects, not {type(addr).__name__}")
        records += bytes([lib.DP_SAN_IP]) + len(packed).to_bytes(2, "big") + packed
        count += 1
    if count > lib.DP_CERT_MAX_SANS:
        raise errors.InvalidArgumentError(
            f"at most {lib.DP_CERT_MAX_SANS} subject alternative names, got {count}")
    return bytes(records)


class Crypto:
    """Random bytes, key generation and self-signed certificates (Godot ``Crypto``).

    Differences from Godot: failures raise instead of returning null objects;
    ``generate_ec`` is ours; ``generate_self_signed_certificate`` validates
    its dates and can add subjectAltName entries (Godot adds none), and its
    random serial is made positive as RFC 5280 requires.

    ``sign``/``verify`` (RSA PKCS#1 v1.5 or ECDSA over a precomputed hash),
    ``encrypt``/``decrypt`` (RSA PKCS#1 v1.5), ``hmac_digest`` and
    ``constant_time_compare`` follow Godot 4, except that failures raise
    (Godot returns an empty array or ``false``): an empty key
    :class:`~dtlspeer.errors.StateError`; a public key where a private one is
    needed, a hash of the wrong size, a plaintext too long for the key
    :class:`~dtlspeer.errors.InvalidArgumentError`; an EC key for
    ``encrypt``/``decrypt`` :class:`~dtlspeer.errors.UnsupportedError`; any
    bad ciphertext :class:`~dtlspeer.errors.DecryptionError`. ECDSA
    signatures are deterministic (RFC 6979; Godot's are random): both verify
    the same way.
    """

    def generate_random_bytes(self, size: int) -> bytes:
        """``size`` bytes from Mbed TLS's PSA random generator."""
        if not isinstance(size, int) or isinstance(size, bool):
            raise errors.ArgumentTypeError(f"size must be int, not {type(size).__name__}")
        if size < 0:
            raise errors.InvalidArgumentError(f"size must be >= 0, not {size}")
        buf = ffi.new("unsigned char[]", size) if size else ffi.new("unsigned char[]", 1)
        check(lib.dp_random(buf, size), "Crypto.generate_random_bytes")
        return bytes(ffi.buffer(buf, size))

    def generate_rsa(self, size: int) -> CryptoKey:
        """A new RSA private key of ``size`` bits (2048..4096, a multiple of 8;
        exponent 65537). Other sizes raise :class:`~dtlspeer.errors.UnsupportedError`."""
        if not isinstance(size, int) or isinstance(size, bool):
            raise errors.ArgumentTypeError(f"size must be int, not {type(size).__name__}")
        if not (lib.DP_RSA_GEN_MIN_BITS <= size <= lib.DP_RSA_GEN_MAX_BITS) or size % 8:
            raise errors.UnsupportedError(
                f"RSA size must be {lib.DP_RSA_GEN_MIN_BITS}..{lib.DP_RSA_GEN_MAX_BITS} bits "
                f"and a multiple of 8, not {size}")
        key = CryptoKey()
        check(lib.dp_key_generate_rsa(key._handle, size), "Crypto.generate_rsa")
        return key

    def generate_ec(self, curve: str = "P-256") -> CryptoKey:
        """A new EC private key on ``curve``: ``"P-256"`` (default), ``"P-384"`` or
        ``"P-521"`` (SEC names such as ``"secp384r1"`` work too). Others raise
        :class:`~dtlspeer.errors.UnsupportedError`. Ours: Godot has no EC generator."""
        if not isinstance(curve, str):
            raise errors.ArgumentTypeError(f"curve must be str, not {type(curve).__name__}")
        curve_id = _CURVES.get(curve.upper())
        if curve_id is None:
            raise errors.UnsupportedError(
                f"unsupported curve {curve!r}; use P-256, P-384 or P-521")
        key = CryptoKey()
        check(lib.dp_key_generate_ec(key._handle, curve_id), "Crypto.generate_ec")
        return key

    def generate_self_signed_certificate(
        self,
        key: CryptoKey,
        issuer_name: str = "CN=myserver,O=myorganisation,C=IT",
        not_before: str = "20140101000000",
        not_after: str = "20340101000000",
        *,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[Any] = (),
    ) -> X509Certificate:
        """A self-signed X.509 v3 certificate for ``key``, as Godot makes it:
        SHA-256 signature, subject = issuer = ``issuer_name``, a random 20-byte
        serial, basicConstraints CA:TRUE pathlen 0, dates ``YYYYMMDDhhmmss``
        UTC. Ours: ``dns_names`` and ``ip_addresses`` (IPv4/IPv6) become
        subjectAltName entries (at most 64), so clients can verify a name
        or address without relying on the CN.

        Raises :class:`~dtlspeer.errors.InvalidArgumentError` for a malformed
        name or date, or ``not_after`` before ``not_before``."""
        if not isinstance(key, CryptoKey):
            raise errors.ArgumentTypeError(f"key must be a CryptoKey, not {type(key).__name__}")
        if key.is_empty():
            raise errors.StateError("key is empty")
        if key.is_public_only():
            raise errors.InvalidArgumentError("a self-signed certificate needs a private key")
        if not isinstance(issuer_name, str):
            raise errors.ArgumentTypeError(
                f"issuer_name must be str, not {type(issuer_name).__name__}")
        if not issuer_name or "\0" in issuer_name:
            raise errors.InvalidArgumentError(
                "issuer_name must be a non-empty name like 'CN=x,O=y,C=IT'")
        _check_rdn_string(issuer_name)
        start = _check_date(not_before, "not_before")
        end = _check_date(not_after, "not_after")
        if end < start:
            raise errors.InvalidArgumentError("not_after is before not_before")
        sans = _san_records(dns_names, ip_addresses)
        cert = X509Certificate()
        with key._mutex:
            code = lib.dp_cert_generate_self_signed(
                cert._handle, key._handle, issuer_name.encode("utf-8"),
                not_before.encode("ascii"), not_after.encode("ascii"), sans, len(sans))
        check(code, f"Crypto.generate_self_signed_certificate(issuer_name={issuer_name!r})")
        return cert

    # -- signatures, RSA encryption, HMAC (Godot 4) ---------------------------

    def sign(self, hash_type: int, hash: Union[bytes, bytearray, memoryview],
             key: CryptoKey) -> bytes:
        """Sign ``hash``, a digest already computed with ``hash_type``
        (``HashingContext.HASH_MD5``/``HASH_SHA1``/``HASH_SHA256``, 16/20/32
        bytes), with a private ``key``: RSA PKCS#1 v1.5 (the signature is as
        long as the modulus) or ECDSA (DER ``SEQUENCE {r, s}``), as Godot."""
        kind, digest = _hash_argument(hash_type, hash, "Crypto.sign")
        _key_argument(key, private=True, what="Crypto.sign")
        out = ffi.new("unsigned char[]", lib.DP_SIGNATURE_MAX)
        with key._mutex:
            n = check(lib.dp_key_sign(key._handle, int(kind), digest, len(digest), out,
                                      lib.DP_SIGNATURE_MAX), "Crypto.sign")
        return bytes(ffi.buffer(out, n))

    def verify(self, hash_type: int, hash: Union[bytes, bytearray, memoryview],
               signature: Union[bytes, bytearray, memoryview], key: CryptoKey) -> bool:
        """True if ``signature`` is ``key``'s signature of ``hash`` (see
        :meth:`sign`); a public or private key. A malformed or wrong
        signature is ``False``; a hash of the wrong size raises
        :class:`~dtlspeer.errors.InvalidArgumentError` (Godot: ``false``)."""
        kind, digest = _hash_argument(hash_type, hash, "Crypto.verify")
        sig = to_bytes(signature, "signature")
        _key_argument(key, private=False, what="Crypto.verify")
        with key._mutex:
            valid = check(lib.dp_key_verify(key._handle, int(kind), digest, len(digest), sig,
                                            len(sig)), "Crypto.verify")
        return valid == 1

    def encrypt(self, key: CryptoKey, plaintext: Union[bytes, bytearray, memoryview]) -> bytes:
        """RSA PKCS#1 v1.5 encryption (randomized) of at most modulus - 11
        bytes (245 for RSA-2048; empty is allowed) with a public or private
        RSA ``key``. EC keys: :class:`~dtlspeer.errors.UnsupportedError`."""
        data = to_bytes(plaintext, "plaintext")
        _key_argument(key, private=False, what="Crypto.encrypt")
        _rsa_only(key, "Crypto.encrypt")
        limit = (key.key_size + 7) // 8 - 11  # modulus bytes - PKCS#1 v1.5 overhead
        if len(data) > limit:
            raise errors.InvalidArgumentError(
                f"Crypto.encrypt: at most {limit} bytes fit an RSA-{key.key_size} "
                f"PKCS#1 v1.5 block, not {len(data)}")
        out = ffi.new("unsigned char[]", lib.DP_SIGNATURE_MAX)
        with key._mutex:
            n = check(lib.dp_key_encrypt(key._handle, data, len(data), out,
                                         lib.DP_SIGNATURE_MAX), "Crypto.encrypt")
        return bytes(ffi.buffer(out, n))

    def decrypt(self, key: CryptoKey, ciphertext: Union[bytes, bytearray, memoryview]) -> bytes:
        """Decrypt an RSA PKCS#1 v1.5 ``ciphertext`` with a private RSA ``key``.
        Any bad ciphertext (wrong length or key, bad padding) raises
        :class:`~dtlspeer.errors.DecryptionError`, always with the same message."""
        data = to_bytes(ciphertext, "ciphertext")
        _key_argument(key, private=True, what="Crypto.decrypt")
        _rsa_only(key, "Crypto.decrypt")
        out = ffi.new("unsigned char[]", lib.DP_SIGNATURE_MAX)
        with key._mutex:
            n = check(lib.dp_key_decrypt(key._handle, data, len(data), out,
                                         lib.DP_SIGNATURE_MAX), "Crypto.decrypt")
        try:
            return bytes(ffi.buffer(out, n))
        finally:
            ffi.memmove(out, bytes(n), n)  # plaintext leaves only in the result

    def hmac_digest(self, hash_type: int, key: Union[bytes, bytearray, memoryview],
                    msg: Union[bytes, bytearray, memoryview]) -> bytes:
        """The HMAC of ``msg`` under ``key`` (one-shot :class:`~dtlspeer.hashing.HMACContext`):
        SHA-1 or SHA-256 only, non-empty ``key`` and ``msg`` (Godot returns an
        empty array for an empty message; we raise
        :class:`~dtlspeer.errors.InvalidArgumentError`)."""
        data = to_bytes(msg, "msg")
        context = HMACContext()
        context.start(hash_type, key)
        if not data:
            raise errors.InvalidArgumentError(
                "Crypto.hmac_digest: msg must not be empty (Godot returns an empty array)")
        context.update(data)
        return context.finish()

    def constant_time_compare(self, trusted: Union[bytes, bytearray, memoryview],
                              received: Union[bytes, bytearray, memoryview]) -> bool:
        """True when both byte strings are equal, in time independent of
        their content (not of their length: different lengths are ``False``
        at once, as in Godot). Uses ``hmac.compare_digest`` (standard library)."""
        return hmac.compare_digest(to_bytes(trusted, "trusted"), to_bytes(received, "received"))


def _hash_argument(hash_type: Any, digest: Any, what: str) -> tuple[HashType, bytes]:
    kind = hash_type_of(hash_type)
    raw = to_bytes(digest, "hash")
    if len(raw) != DIGEST_SIZES[kind]:
        raise errors.InvalidArgumentError(
            f"{what}: hash must be the {DIGEST_SIZES[kind]}-byte {kind.name[5:]} digest "
            f"(pass the digest, not the message), not {len(raw)} bytes")
    return kind, raw


def _key_argument(key: Any, *, private: bool, what: str) -> None:
    if not isinstance(key, CryptoKey):
        raise errors.ArgumentTypeError(f"{what}: key must be a CryptoKey, not {type(key).__name__}")
    if key.is_empty():
        raise errors.StateError(f"{what}: key is empty")
    if private and key.is_public_only():
        raise errors.InvalidArgumentError(f"{what} needs a private key; this one is public only")


def _rsa_only(key: CryptoKey, what: str) -> None:
    if key.key_type != "RSA":
        raise errors.UnsupportedError(
            f"{what}: RSA keys only (PKCS#1 v1.5, as Godot), not {key.key_type}")

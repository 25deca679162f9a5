"""PacketPeer: the abstract packet interface shared by UDP and DTLS peers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional, Union

from . import errors
from .errors import DTLSPeerError
from .variant import bytes_to_var, var_to_bytes

__all__ = ["BytesLike", "PacketPeer"]

BytesLike = Union[bytes, bytearray, memoryview]

DEFAULT_ENCODE_BUFFER_MAX_SIZE = 8 * 1024 * 1024
"""Godot's default ``encode_buffer_max_size`` (8 MiB)."""


class PacketPeer(ABC):
    """Abstract base of packet-based peers (Godot ``PacketPeer``).

    Differences from Godot: failures raise :mod:`dtlspeer.errors` exceptions
    instead of returning ``Error`` codes; ``get_packet()`` on an empty queue
    raises :class:`~dtlspeer.errors.WouldBlockError` (Godot returns an empty
    array and sets ``ERR_UNAVAILABLE``); ``get_packet_error()`` returns the
    exception of the last ``get_packet`` call or ``None`` (Godot: an ``Error``).
    ``put_var``/``get_var`` send and read one Godot Variant per packet
    (:mod:`dtlspeer.variant`), with no framing, as Godot's PacketPeer does.
    """

    _packet_error: Optional[DTLSPeerError] = None
    _encode_buffer_max_size: int = DEFAULT_ENCODE_BUFFER_MAX_SIZE

    @property
    def encode_buffer_max_size(self) -> int:
        """Largest encoding ``put_var`` sends (Godot: same name, default
        8 388 608). Setting it below 1024 or above 256 MiB raises
        InvalidArgumentError (Godot logs an error and keeps the old value);
        other values round up to a power of two, as in Godot."""
        return self._encode_buffer_max_size

    @encode_buffer_max_size.setter
    def encode_buffer_max_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.ArgumentTypeError(
                f"encode_buffer_max_size must be an int, not {type(value).__name__}"
            )
        if not 1024 <= value <= 256 * 1024 * 1024:
            raise errors.InvalidArgumentError(
                f"encode_buffer_max_size must be 1024 .. 268435456, not {value}"
            )
        self._encode_buffer_max_size = 1 << (value - 1).bit_length()

    def get_encode_buffer_max_size(self) -> int:
        """Godot's getter name for ``encode_buffer_max_size``."""
        return self._encode_buffer_max_size

    def set_encode_buffer_max_size(self, max_size: int) -> None:
        """Godot's setter name for ``encode_buffer_max_size`` (same checks:
        raises outside 1024 .. 256 MiB, where Godot logs and keeps the old
        value)."""
        self.encode_buffer_max_size = max_size

    def put_var(self, value: Any, full_objects: bool = False, *, godot: int = 4) -> None:
        """Encode ``value`` with :func:`~dtlspeer.variant.var_to_bytes` and send
        it as one packet (Godot: same, no length prefix). ``godot=3`` writes
        the 3.x format. LimitError if the encoding is longer than
        ``encode_buffer_max_size`` (Godot: ``ERR_OUT_OF_MEMORY``); encoding
        errors raise as in ``var_to_bytes`` (Godot returns an error code)."""
        data = var_to_bytes(value, full_objects=full_objects, godot=godot)
        if len(data) > self._encode_buffer_max_size:
            raise errors.LimitError(
                f"encoded value is {len(data)} bytes, over encode_buffer_max_size "
                f"({self._encode_buffer_max_size})"
            )
        self.put_packet(data)

    def get_var(self, allow_objects: bool = False, *, godot: int = 4) -> Any:
        """Read one packet and decode it with
        :func:`~dtlspeer.variant.bytes_to_var` (Godot: same). Raises what
        ``get_packet`` raises (WouldBlockError when none is queued) and
        :class:`~dtlspeer.variant.VariantDecodeError` for a packet that is not
        a valid encoding; that packet is consumed either way, and
        ``get_packet_error()`` reflects only the read, as in Godot (which
        returns ``null`` instead of raising)."""
        return bytes_to_var(self.get_packet(), allow_objects=allow_objects, godot=godot)

    @abstractmethod
    def get_available_packet_count(self) -> int:
        """Number of packets ready to be read (Godot: same)."""

    @abstractmethod
    def get_packet(self) -> bytes:
        """Read the oldest packet. Raises ``WouldBlockError`` if there is none."""

    @abstractmethod
    def put_packet(self, data: BytesLike) -> None:
        """Send one packet. An empty packet sends nothing (Godot: returns OK)."""

    def get_packet_error(self) -> Optional[DTLSPeerError]:
        """The exception raised by the last ``get_packet``/``get_packet_into``
        call, or ``None`` if it succeeded (Godot returns an ``Error`` code)."""
        return self._packet_error

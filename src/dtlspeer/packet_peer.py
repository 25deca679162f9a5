"""PacketPeer: the abstract packet interface shared by UDP and DTLS peers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Union

from .errors import DTLSPeerError

__all__ = ["BytesLike", "PacketPeer"]

BytesLike = Union[bytes, bytearray, memoryview]


class PacketPeer(ABC):
    """Abstract base of packet-based peers (Godot ``PacketPeer``).

    Differences from Godot: failures raise :mod:`dtlspeer.errors` exceptions
    instead of returning ``Error`` codes; ``get_packet()`` on an empty queue
    raises :class:`~dtlspeer.errors.WouldBlockError` (Godot returns an empty
    array and sets ``ERR_UNAVAILABLE``); ``get_packet_error()`` returns the
    exception of the last ``get_packet`` call or ``None`` (Godot: an ``Error``).
    ``get_var``/``put_var`` (Godot Variant encoding) are not provided yet.
    """

    _packet_error: Optional[DTLSPeerError] = None

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

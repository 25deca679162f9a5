"""dtlspeer: Godot-style UDP and DTLS 1.2 networking for Python game backends.

The public classes mirror Godot 4 (same names, methods, enums, semantics) and
raise :mod:`dtlspeer.errors` exceptions instead of returning ``Error`` codes.
"""

from __future__ import annotations

from . import aio, errors, variant
from .aes import AESContext
from .build_info import build_info, ciphersuites, mbedtls_version
from .crypto import Crypto, CryptoKey, X509Certificate
from .dtls import DTLSServer, DTLSSettings, PacketPeerDTLS
from .errors import DTLSPeerError, GodotError
from .hashing import HashingContext, HMACContext
from .host import DisconnectReason, DTLSHost, HostEvent, HostEventType, HostPeer
from .packet_peer import PacketPeer
from .session import Session, SessionTicketKeys
from .tls_options import PeerCertificate, TLSOptions
from .udp import PacketPeerUDP, UDPServer

__version__ = "0.1.0"

__all__ = [
    "AESContext",
    "Crypto",
    "CryptoKey",
    "DTLSHost",
    "DTLSPeerError",
    "DTLSServer",
    "DTLSSettings",
    "DisconnectReason",
    "GodotError",
    "HMACContext",
    "HashingContext",
    "HostEvent",
    "HostEventType",
    "HostPeer",
    "PacketPeer",
    "PacketPeerDTLS",
    "PacketPeerUDP",
    "PeerCertificate",
    "Session",
    "SessionTicketKeys",
    "TLSOptions",
    "UDPServer",
    "X509Certificate",
    "__version__",
    "aio",
    "build_info",
    "ciphersuites",
    "errors",
    "mbedtls_version",
    "variant",
]

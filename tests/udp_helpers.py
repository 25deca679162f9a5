"""Shared helpers for the UDP tests: bounded waits, allocation counters."""

from __future__ import annotations

import socket
import time
from typing import Callable

from dtlspeer._binding import ffi, lib

DEADLINE_S = 3.0


def until(condition: Callable[[], bool], step: Callable[[], object] = lambda: None) -> bool:
    """Run ``step`` then test ``condition`` until it holds or DEADLINE_S passes."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        step()
        if condition():
            return True
        time.sleep(0.002)
    step()
    return condition()


def alloc_bytes() -> int:
    """Bytes the extension holds through dp_calloc right now."""
    b = ffi.new("int64_t *")
    n = ffi.new("int64_t *")
    lib.dp_alloc_stats(b, n)
    return int(b[0])


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


# (ICMP type, code) -> the errno Linux reports for it (icmp_err_convert).
ICMP_ERRORS = {
    "port unreachable": (3, 3),  # ECONNREFUSED
    "protocol unreachable": (3, 2),  # ENOPROTOOPT
    "fragmentation needed": (3, 4),  # EMSGSIZE
    "host unknown": (3, 7),  # EHOSTDOWN
    "host isolated": (3, 8),  # ENONET
    "administratively prohibited": (3, 13),  # EHOSTUNREACH (ICMPv6's is EACCES)
    "parameter problem": (12, 0),  # EPROTO
}


def can_inject_icmp() -> bool:
    """Raw ICMP sockets need root (CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return False


def inject_icmp(sender: tuple[str, int], receiver: tuple[str, int], kind: str) -> None:
    """Forge an ICMP error (IPv4 loopback) about a UDP datagram that went
    from ``sender`` to ``receiver``, as anyone on the path could: the kernel
    hands it to ``sender``'s socket. Nothing authenticates it."""
    icmp_type, code = ICMP_ERRORS[kind]
    src, dst = socket.inet_aton(sender[0]), socket.inet_aton(receiver[0])
    inner = bytearray(
        bytes([0x45, 0]) + (28).to_bytes(2, "big") + bytes(4) + bytes([64, 17, 0, 0]) + src + dst
    )
    inner[10:12] = _checksum(bytes(inner)).to_bytes(2, "big")
    udp = sender[1].to_bytes(2, "big") + receiver[1].to_bytes(2, "big") + (8).to_bytes(2, "big")
    # Fragmentation needed carries a next-hop MTU that the kernel caches for
    # the destination: the largest one, so no later datagram is refused.
    rest = (0xFFFF).to_bytes(4, "big") if kind == "fragmentation needed" else bytes(4)
    message = bytearray(bytes([icmp_type, code, 0, 0]) + rest + bytes(inner) + udp + bytes(2))
    message[2:4] = _checksum(bytes(message)).to_bytes(2, "big")
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        raw.sendto(bytes(message), (receiver[0], 0))

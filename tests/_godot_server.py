"""A Godot-style DTLS server loop for tests (UDPServer + DTLSServer +
PacketPeerDTLS, run exactly as a Godot script does) that keeps every peer
it accepted and every packet each one received."""

from __future__ import annotations

from typing import Callable, Optional

from dtlspeer import (
    DTLSServer,
    DTLSSettings,
    PacketPeerDTLS,
    PacketPeerUDP,
    TLSOptions,
    UDPServer,
)
from identities import Identity

Status = PacketPeerDTLS.Status


class GodotServer:
    """Accepts on 127.0.0.1 (an ephemeral port); ``peers`` are the accepted
    (STATUS_HANDSHAKING when taken) PacketPeerDTLS objects, in order. Each
    packet goes to ``on_packet(peer, data)`` if given, else into
    ``received``."""

    def __init__(
        self,
        identity: Identity,
        cookie_secret: Optional[bytes] = None,
        settings: Optional[DTLSSettings] = None,
        on_packet: Optional[Callable[[PacketPeerDTLS, bytes], None]] = None,
    ) -> None:
        self.udp = UDPServer()
        self.udp.listen(0, "127.0.0.1")
        self.dtls = DTLSServer()
        self.dtls.setup(
            TLSOptions.server(*identity), settings=settings, cookie_secret=cookie_secret
        )
        self.port = self.udp.get_local_port()
        self.peers: list[PacketPeerDTLS] = []
        self.received: dict[int, list[bytes]] = {}
        self.taken = 0
        self.on_packet = on_packet

    def step(self, take: bool = True) -> None:
        """One frame: poll, take new connections (unless ``take`` is False),
        poll every peer and read its packets."""
        self.udp.poll()
        while take and self.udp.is_connection_available():
            udp_peer = self.udp.take_connection()
            assert udp_peer is not None
            self.taken += 1
            peer = self.dtls.take_connection(udp_peer)
            if peer.get_status() == Status.STATUS_HANDSHAKING:
                self.peers.append(peer)
        for peer in self.peers:
            peer.poll()
            while peer.get_available_packet_count() > 0:
                data = peer.get_packet()
                if self.on_packet is not None:
                    self.on_packet(peer, data)
                else:
                    self.received.setdefault(id(peer), []).append(data)

    def connected_peers(self) -> list[PacketPeerDTLS]:
        return [p for p in self.peers if p.get_status() == Status.STATUS_CONNECTED]

    def received_by(self, peer: PacketPeerDTLS) -> list[bytes]:
        return self.received.get(id(peer), [])

    def connect_client(self) -> PacketPeerDTLS:
        """A Godot-style client of this server (certificate not checked)."""
        udp = PacketPeerUDP()
        udp.connect_to_host("127.0.0.1", self.port)
        client = PacketPeerDTLS()
        client.connect_to_peer(udp, "game.test", TLSOptions.client_unsafe())
        return client

    def stop(self) -> None:
        for peer in self.peers:
            peer.disconnect_from_peer()
        self.udp.stop()

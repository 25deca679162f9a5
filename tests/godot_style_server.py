"""A Godot-style DTLS server (UDPServer + DTLSServer + PacketPeerDTLS) stepped
from a test, written as Godot's polling loop is."""

from __future__ import annotations

from typing import Callable

from dtlspeer import DTLSServer, PacketPeerDTLS, TLSOptions, UDPServer


class GodotStyleServer:
    """``step()`` accepts, polls every peer and hands each record to
    ``on_packet(peer, data)``."""

    def __init__(self, options: TLSOptions,
                 on_packet: Callable[[PacketPeerDTLS, bytes], None]) -> None:
        self.udp_server = UDPServer()
        self.udp_server.listen(0, "127.0.0.1")
        self.dtls = DTLSServer()
        self.dtls.setup(options)
        self.peers: list[PacketPeerDTLS] = []
        self.on_packet = on_packet

    @property
    def port(self) -> int:
        return self.udp_server.get_local_port()

    def step(self) -> None:
        self.udp_server.poll()
        while self.udp_server.is_connection_available():
            peer = self.dtls.take_connection(self.udp_server.take_connection())
            # The first (cookieless) hello's peer comes back STATUS_ERROR.
            if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
                self.peers.append(peer)
        for peer in self.peers:
            peer.poll()
            while peer.get_available_packet_count() > 0:
                self.on_packet(peer, peer.get_packet())

    def stop(self) -> None:
        self.udp_server.stop()

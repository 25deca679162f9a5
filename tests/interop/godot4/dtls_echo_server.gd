# Godot 4 headless DTLS echo server for dtlspeer's raw DTLS interop tests.
#   godot4 --headless --path DIR --script res://dtls_echo_server.gd -- PORT KEY CERT COUNT TIMEOUT_MS
# UDPServer on 127.0.0.1:PORT + DTLSServer.setup(TLSOptions.server(KEY, CERT)),
# the documented loop (take_connection, keep the HANDSHAKING peers), echoes
# every packet. Prints "READY" once listening, then "PASS <n>" and exits 0
# once it echoed COUNT packets AND the client's close_notify turned that
# peer STATUS_DISCONNECTED; "FAIL <reason>" and exit 1 otherwise. Every wait
# is bounded by TIMEOUT_MS.
extends SceneTree

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var key := CryptoKey.new()
	var cert := X509Certificate.new()
	if key.load(args[1]) != OK or cert.load(args[2]) != OK:
		print("FAIL cannot load key or certificate")
		quit(1)
		return
	var count := int(args[3])
	var deadline := Time.get_ticks_msec() + int(args[4])
	var dtls := DTLSServer.new()
	if dtls.setup(TLSOptions.server(key, cert)) != OK:
		print("FAIL DTLSServer.setup")
		quit(1)
		return
	var server := UDPServer.new()
	if server.listen(int(args[0]), "127.0.0.1") != OK:
		print("FAIL listen")
		quit(1)
		return
	print("READY")
	var peers: Array[PacketPeerDTLS] = []
	var echoed := 0
	var closed := 0
	while Time.get_ticks_msec() < deadline:
		server.poll()
		while server.is_connection_available():
			var peer := dtls.take_connection(server.take_connection())
			if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
				peers.append(peer)
		for p in peers:
			var was_connected := p.get_status() == PacketPeerDTLS.STATUS_CONNECTED
			p.poll()
			if p.get_status() == PacketPeerDTLS.STATUS_CONNECTED:
				while p.get_available_packet_count() > 0:
					var data := p.get_packet()
					if p.get_packet_error() == OK and data.size() > 0:
						p.put_packet(data)
						echoed += 1
			elif was_connected:
				if p.get_status() != PacketPeerDTLS.STATUS_DISCONNECTED:
					print("FAIL peer ended with status %d" % p.get_status())
					quit(1)
					return
				closed += 1
		if echoed >= count and closed >= 1:
			print("PASS %d" % echoed)
			quit(0)
			return
		OS.delay_msec(1)
	print("FAIL timeout: echoed %d, closed %d, peers %d" % [echoed, closed, peers.size()])
	quit(1)

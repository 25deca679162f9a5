# Godot 4 headless DTLS echo client for dtlspeer's raw DTLS interop tests.
#   godot4 --headless --path DIR --script res://dtls_echo_client.gd -- PORT CERT_PATH COUNT TIMEOUT_MS [LOCAL_PORT]
# PacketPeerUDP (bound to 127.0.0.1:LOCAL_PORT first if given, as one end of
# a NAT punch) + connect_to_host, then PacketPeerDTLS.connect_to_peer with
# TLSOptions.client(CERT) and the name "localhost" (certificate and name
# verified), sends COUNT numbered messages one at a time and checks every
# echo, then disconnect_from_peer() (close_notify). Prints "PASS <n>" and
# exits 0, or "FAIL <reason>" and exits 1.
# Every wait is bounded by TIMEOUT_MS.
extends SceneTree

func fail(dtls: PacketPeerDTLS, reason: String) -> void:
	print("FAIL " + reason)
	dtls.disconnect_from_peer()
	quit(1)

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var dtls := PacketPeerDTLS.new()
	var cert := X509Certificate.new()
	if cert.load(args[1]) != OK:
		fail(dtls, "cannot load certificate")
		return
	var count := int(args[2])
	var deadline := Time.get_ticks_msec() + int(args[3])
	var udp := PacketPeerUDP.new()
	if args.size() > 4 and udp.bind(int(args[4]), "127.0.0.1") != OK:
		fail(dtls, "udp bind")
		return
	if udp.connect_to_host("127.0.0.1", int(args[0])) != OK:
		fail(dtls, "udp connect_to_host")
		return
	if dtls.connect_to_peer(udp, "localhost", TLSOptions.client(cert)) != OK:
		fail(dtls, "connect_to_peer")
		return
	while dtls.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING and Time.get_ticks_msec() < deadline:
		dtls.poll()
		OS.delay_msec(1)
	if dtls.get_status() != PacketPeerDTLS.STATUS_CONNECTED:
		fail(dtls, "handshake ended with status %d" % dtls.get_status())
		return
	for i in count:
		var message := ("msg %d" % i).to_utf8_buffer()
		if dtls.put_packet(message) != OK:
			fail(dtls, "put_packet %d" % i)
			return
		dtls.poll()
		while dtls.get_available_packet_count() == 0 and Time.get_ticks_msec() < deadline:
			if dtls.get_status() != PacketPeerDTLS.STATUS_CONNECTED:
				fail(dtls, "status %d while waiting for echo %d" % [dtls.get_status(), i])
				return
			OS.delay_msec(1)
			dtls.poll()
		if dtls.get_available_packet_count() == 0:
			fail(dtls, "timeout waiting for echo %d" % i)
			return
		var echo := dtls.get_packet()
		if dtls.get_packet_error() != OK or echo != message:
			fail(dtls, "echo %d was %s" % [i, echo.hex_encode()])
			return
	dtls.disconnect_from_peer()
	print("PASS %d" % count)
	quit(0)

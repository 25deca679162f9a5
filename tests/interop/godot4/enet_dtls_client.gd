# Godot 4 ENetMultiplayerPeer client with DTLS, for dtlspeer's ENet interop test.
#   godot4 --headless --path DIR --script res://enet_dtls_client.gd -- PORT CERT_PATH
# create_client, then host.dtls_client_setup("localhost", TLSOptions.client(cert))
# (certificate and name checked) before the first poll. Once connected it sends
# one packet per transfer mode / channel and expects each echoed back (our
# server echoes with the same ENet channel and flags). Prints "PASS ..." and
# exits 0, or "FAIL <reason>" and exits 1. Every wait is bounded.
extends SceneTree

const TIMEOUT_MS := 20000

func fail(reason: String) -> void:
	print("FAIL " + reason)
	quit(1)

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var cert := X509Certificate.new()
	if cert.load(args[1]) != OK:
		fail("cannot load certificate")
		return
	var peer := ENetMultiplayerPeer.new()
	if peer.create_client("127.0.0.1", int(args[0]), 4) != OK:
		fail("create_client")
		return
	if peer.host.dtls_client_setup("localhost", TLSOptions.client(cert)) != OK:
		fail("dtls_client_setup")
		return
	var deadline := Time.get_ticks_msec() + TIMEOUT_MS
	while peer.get_connection_status() != MultiplayerPeer.CONNECTION_CONNECTED and Time.get_ticks_msec() < deadline:
		peer.poll()
		OS.delay_msec(2)
	if peer.get_connection_status() != MultiplayerPeer.CONNECTION_CONNECTED:
		fail("not connected, status %d" % peer.get_connection_status())
		return
	# (transfer mode, script channel, payload)
	var sends := [
		[MultiplayerPeer.TRANSFER_MODE_RELIABLE, 0, "reliable".to_utf8_buffer()],
		[MultiplayerPeer.TRANSFER_MODE_UNRELIABLE, 0, "unreliable".to_utf8_buffer()],
		[MultiplayerPeer.TRANSFER_MODE_UNRELIABLE_ORDERED, 0, "ordered".to_utf8_buffer()],
		[MultiplayerPeer.TRANSFER_MODE_RELIABLE, 3, "reliable-ch3".to_utf8_buffer()],
		[MultiplayerPeer.TRANSFER_MODE_UNRELIABLE, 2, "unreliable-ch2".to_utf8_buffer()],
	]
	var big := PackedByteArray()
	big.resize(10000)
	for i in big.size():
		big[i] = i % 251
	sends.append([MultiplayerPeer.TRANSFER_MODE_RELIABLE, 1, big])
	var expected := {}
	peer.set_target_peer(1)
	for s in sends:
		peer.transfer_mode = s[0]
		peer.transfer_channel = s[1]
		if peer.put_packet(s[2]) != OK:
			fail("put_packet")
			return
		expected[s[2]] = [s[0], s[1]]
	var got := 0
	while got < sends.size() and Time.get_ticks_msec() < deadline:
		peer.poll()
		while peer.get_available_packet_count() > 0:
			var mode := peer.get_packet_mode()
			var channel := peer.get_packet_channel()
			var data := peer.get_packet()
			if not expected.has(data):
				fail("unexpected packet of %d bytes" % data.size())
				return
			if expected[data] != [mode, channel]:
				fail("mode/channel %s for %s" % [str([mode, channel]), str(expected[data])])
				return
			expected.erase(data)
			got += 1
		OS.delay_msec(2)
	if got < sends.size():
		fail("only %d echoes of %d" % [got, sends.size()])
		return
	peer.close()
	print("PASS %d" % got)
	quit(0)

# Godot 4 ENetMultiplayerPeer DTLS server, for dtlspeer's ENetMultiplayerPeer interop test.
#   godot4 --headless --path DIR --script res://enet_mp_server.gd -- PORT KEY CERT
# create_server(PORT) + host.dtls_server_setup(TLSOptions.server(key, cert)); prints
# "READY", then "CONNECTED <id>" for the client, echoes every packet to its sender
# with the packet's own transfer mode and channel, and prints "PASS <n>" when
# the client disconnects (exit 0), "FAIL ..." on timeout (exit 1).
extends SceneTree

const TIMEOUT_MS := 20000

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var key := CryptoKey.new()
	var cert := X509Certificate.new()
	if key.load(args[1]) != OK or cert.load(args[2]) != OK:
		print("FAIL key/cert")
		quit(1)
		return
	var peer := ENetMultiplayerPeer.new()
	peer.set_bind_ip("127.0.0.1")
	if peer.create_server(int(args[0]), 4) != OK:
		print("FAIL create_server")
		quit(1)
		return
	if peer.host.dtls_server_setup(TLSOptions.server(key, cert)) != OK:
		print("FAIL dtls_server_setup")
		quit(1)
		return
	var state := {"gone": false, "echoed": 0}
	peer.peer_connected.connect(func(id): print("CONNECTED %d" % id))
	peer.peer_disconnected.connect(func(_id): state["gone"] = true)
	print("READY")
	var deadline := Time.get_ticks_msec() + TIMEOUT_MS
	while Time.get_ticks_msec() < deadline and not state["gone"]:
		peer.poll()
		while peer.get_available_packet_count() > 0:
			var from := peer.get_packet_peer()
			var mode := peer.get_packet_mode()
			var channel := peer.get_packet_channel()
			var data := peer.get_packet()
			peer.set_target_peer(from)
			peer.transfer_mode = mode
			peer.transfer_channel = channel
			peer.put_packet(data)
			state["echoed"] += 1
		OS.delay_msec(2)
	if state["gone"]:
		print("PASS %d" % state["echoed"])
		peer.close()
		quit(0)
	else:
		print("FAIL timeout after %d echoes" % state["echoed"])
		quit(1)

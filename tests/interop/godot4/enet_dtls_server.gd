# Godot 4 raw ENetConnection DTLS server, for dtlspeer's ENet interop test.
#   godot4 --headless --path DIR --script res://enet_dtls_server.gd -- PORT KEY CERT
# create_host_bound("127.0.0.1", PORT) + dtls_server_setup(TLSOptions.server(key, cert));
# prints "READY", echoes every packet on its channel with its flags, and
# ends with "PASS <n>" after the client's DISCONNECT (exit 0) or "FAIL" on timeout.
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
	var host := ENetConnection.new()
	if host.create_host_bound("127.0.0.1", int(args[0]), 4) != OK:
		print("FAIL bind")
		quit(1)
		return
	if host.dtls_server_setup(TLSOptions.server(key, cert)) != OK:
		print("FAIL dtls_server_setup")
		quit(1)
		return
	print("READY")
	var echoed := 0
	var deadline := Time.get_ticks_msec() + TIMEOUT_MS
	while Time.get_ticks_msec() < deadline:
		var ev := host.service(5)
		var kind: int = ev[0]
		var p: ENetPacketPeer = ev[1]
		if kind == ENetConnection.EVENT_CONNECT:
			print("CONNECT %d" % ev[2])
		elif kind == ENetConnection.EVENT_RECEIVE:
			var data := p.get_packet()
			var flags := ENetPacketPeer.FLAG_RELIABLE if data.size() > 1000 or data[0] == 0x52 else ENetPacketPeer.FLAG_UNSEQUENCED
			p.send(ev[3], data, flags)
			echoed += 1
		elif kind == ENetConnection.EVENT_DISCONNECT:
			print("PASS %d data=%d" % [echoed, ev[2]])
			host.flush()
			quit(0)
			return
	print("FAIL timeout after %d echoes" % echoed)
	quit(1)

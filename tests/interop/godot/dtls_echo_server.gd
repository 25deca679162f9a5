# Godot 3.2 headless DTLS echo server, used by dtlspeer's interop tests.
#   godot3-server --no-window -s dtls_echo_server.gd --port=P --key=PATH --cert=PATH --count=N
# UDPServer + DTLSServer on 127.0.0.1:P; echoes every packet of every peer.
# Prints "READY" once listening; exits 0 with "PASS <n>" after echoing N
# packets, or 1 with "FAIL <reason>" on error or timeout.
extends SceneTree

var server := UDPServer.new()
var dtls := DTLSServer.new()
var peers := []
var echoed := 0
var count := 100
var deadline_ms := 0
var done := false

func arg(name: String, default_value: String) -> String:
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3)
	return default_value

func end_run(ok: bool, message: String) -> void:
	if done:
		return
	done = true
	print(("PASS " if ok else "FAIL ") + message)
	quit(0 if ok else 1)

func _init() -> void:
	count = int(arg("count", "100"))
	deadline_ms = OS.get_ticks_msec() + int(arg("timeout_ms", "30000"))
	var key := CryptoKey.new()
	var cert := X509Certificate.new()
	if key.load(arg("key", "")) != OK or cert.load(arg("cert", "")) != OK:
		end_run(false, "cannot load key or certificate")
		return
	if dtls.setup(key, cert) != OK:
		end_run(false, "dtls setup failed")
		return
	if server.listen(int(arg("port", "0")), "127.0.0.1") != OK:
		end_run(false, "listen failed")
		return
	print("READY")

func _idle(_delta: float) -> bool:
	if done:
		return true
	if OS.get_ticks_msec() > deadline_ms:
		end_run(false, "timeout: echoed %d" % echoed)
		return true
	server.poll()
	while server.is_connection_available():
		var peer: PacketPeerDTLS = dtls.take_connection(server.take_connection())
		if peer.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING:
			peers.append(peer)
	for p in peers:
		p.poll()
		if p.get_status() == PacketPeerDTLS.STATUS_CONNECTED:
			while p.get_available_packet_count() > 0:
				p.put_packet(p.get_packet())
				echoed += 1
	if echoed >= count:
		end_run(true, str(echoed))
	OS.delay_msec(1)
	return false

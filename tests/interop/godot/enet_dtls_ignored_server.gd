# Godot 3.2 NetworkedMultiplayerENet server with use_dtls = true, for the check
# whether Debian's build (system libenet, no DTLS socket layer) honours it.
#   godot3-server --no-window -s enet_dtls_ignored_server.gd --port=P --timeout_ms=N
# Prints "READY <create_server result> <use_dtls>", then "CONNECTED <id>" for each
# peer, and exits 0 at the deadline.
extends SceneTree

func arg(name: String, default_value: String) -> String:
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3)
	return default_value

func _on_peer(id):
	print("CONNECTED %d" % id)

func _init() -> void:
	var crypto := Crypto.new()
	var key := crypto.generate_rsa(2048)
	var cert := crypto.generate_self_signed_certificate(key, "CN=localhost", "20240101000000", "20440101000000")
	var p := NetworkedMultiplayerENet.new()
	p.use_dtls = true
	p.set_dtls_key(key)
	p.set_dtls_certificate(cert)
	p.connect("peer_connected", self, "_on_peer")
	var err := p.create_server(int(arg("port", "0")), 4)
	print("READY %d %s" % [err, str(p.use_dtls)])
	var deadline := OS.get_ticks_msec() + int(arg("timeout_ms", "5000"))
	while OS.get_ticks_msec() < deadline:
		p.poll()
		OS.delay_msec(2)
	quit(0)

# Godot 3.2 headless DTLS echo client, used by dtlspeer's interop tests.
#   godot3-server --no-window -s dtls_echo_client.gd --port=P --cert=PATH --host=NAME --count=N
# Connects PacketPeerUDP + PacketPeerDTLS (validating the server certificate
# against PATH and NAME), sends N numbered messages, checks every echo, and
# exits 0 after printing "PASS <n>", or 1 after "FAIL <reason>".
extends SceneTree

var udp := PacketPeerUDP.new()
var dtls := PacketPeerDTLS.new()
var count := 100
var sent := 0
var received := 0
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
	dtls.disconnect_from_peer()
	quit(0 if ok else 1)

func _init() -> void:
	var port := int(arg("port", "0"))
	var host := arg("host", "localhost")
	count = int(arg("count", "100"))
	deadline_ms = OS.get_ticks_msec() + int(arg("timeout_ms", "20000"))
	var cert := X509Certificate.new()
	if cert.load(arg("cert", "")) != OK:
		end_run(false, "cannot load certificate")
		return
	if udp.connect_to_host("127.0.0.1", port) != OK:
		end_run(false, "udp connect failed")
		return
	var err := dtls.connect_to_peer(udp, true, host, cert)
	if err != OK:
		end_run(false, "connect_to_peer returned %d" % err)

func _idle(_delta: float) -> bool:
	if done:
		return true
	if OS.get_ticks_msec() > deadline_ms:
		end_run(false, "timeout: sent %d received %d status %d" % [sent, received, dtls.get_status()])
		return true
	dtls.poll()
	var status := dtls.get_status()
	if status == PacketPeerDTLS.STATUS_CONNECTED:
		while dtls.get_available_packet_count() > 0:
			var data := dtls.get_packet().get_string_from_utf8()
			if data != "msg %d" % received:
				end_run(false, "echo %d was %s" % [received, data])
				return true
			received += 1
		if received == count:
			end_run(true, str(received))
			return true
		if sent == received and sent < count:
			dtls.put_packet(("msg %d" % sent).to_utf8())
			sent += 1
	elif status != PacketPeerDTLS.STATUS_HANDSHAKING:
		end_run(false, "status %d" % status)
	OS.delay_msec(1)
	return false

# The dtlspeer tutorial client (Godot 4): a player of examples/tutorial_server.py.
#
# Connects with PacketPeerDTLS, validating the server's certificate and name,
# says hello, then at the server's tick rate sends the direction the player
# wants to go and shows the state the server sends back. Every message is one
# Dictionary sent with put_var and read with get_var (the server decodes and
# encodes the same Variants in Python).
#
# Command-line overrides, after "--": --host=ADDRESS --port=N --cert=PATH
# --name=NAME, and for headless runs --bot (walk right on its own) and
# --quit-at-x=X (exit 0 once this player's x passes X, 1 on any failure or
# after --timeout=SECONDS).
extends Node

var server_host := "127.0.0.1"
var server_port := 4433
var hostname := "localhost"  # the name the certificate must carry
var certificate_path := "res://server.crt"  # what tutorial_server.py --save-cert wrote
var player_name := "godot"
var bot := false
var quit_at_x := INF
var timeout_ms := 30000

var _udp := PacketPeerUDP.new()
var _dtls := PacketPeerDTLS.new()
var _said_hello := false
var _my_id := -1
var _tick_rate := 20
var _since_input := 0.0
var _seq := 0
var _started_ms := 0
var _done := false

func _ready() -> void:
	for arg in OS.get_cmdline_user_args():
		var parts: PackedStringArray = arg.split("=", true, 1)
		var value := parts[1] if parts.size() > 1 else ""
		match parts[0]:
			"--host": server_host = value
			"--port": server_port = int(value)
			"--cert": certificate_path = value
			"--name": player_name = value
			"--bot": bot = true
			"--quit-at-x": quit_at_x = float(value)
			"--timeout": timeout_ms = int(float(value) * 1000)
	_started_ms = Time.get_ticks_msec()
	var cert := X509Certificate.new()
	if cert.load(certificate_path) != OK:
		finish(false, "cannot load the certificate " + certificate_path)
		return
	if _udp.connect_to_host(server_host, server_port) != OK:
		finish(false, "cannot reach %s:%d" % [server_host, server_port])
		return
	if _dtls.connect_to_peer(_udp, hostname, TLSOptions.client(cert)) != OK:
		finish(false, "connect_to_peer failed")
		return
	print("connecting to %s:%d" % [server_host, server_port])

func _process(delta: float) -> void:
	if _done:
		return
	if Time.get_ticks_msec() - _started_ms > timeout_ms:
		finish(false, "timed out")
		return
	_dtls.poll()
	var status := _dtls.get_status()
	if status == PacketPeerDTLS.STATUS_HANDSHAKING:
		return
	if status != PacketPeerDTLS.STATUS_CONNECTED:
		finish(false, "connection lost (status %d)" % status)
		return
	if not _said_hello:
		_dtls.put_var({"type": "hello", "name": player_name})
		_said_hello = true
	while not _done and _dtls.get_available_packet_count() > 0:
		var message = _dtls.get_var()
		if typeof(message) == TYPE_DICTIONARY:
			_on_message(message)
	# Inputs at the server's tick rate, not at the frame rate.
	_since_input += delta
	if not _done and _my_id >= 0 and _since_input >= 1.0 / _tick_rate:
		_since_input = 0.0
		_seq += 1
		_dtls.put_var({"type": "input", "seq": _seq, "move": _wanted_move()})

func _wanted_move() -> Vector2:
	if bot:
		return Vector2.RIGHT
	return Input.get_vector("ui_left", "ui_right", "ui_up", "ui_down")

func _on_message(message: Dictionary) -> void:
	match message.get("type"):
		"welcome":
			_my_id = message["id"]
			_tick_rate = max(1, int(message["tick_rate"]))
			print("welcome: player id %d, %d ticks/s" % [_my_id, _tick_rate])
		"state":
			var players: Dictionary = message["players"]
			if not players.has(_my_id):
				return
			var me: Dictionary = players[_my_id]
			var pos: Vector2 = me["pos"]
			if message["tick"] % _tick_rate == 0:  # once a second
				print("tick %d: %s at %s, %d player(s)" % [message["tick"], me["name"], pos, players.size()])
			if pos.x >= quit_at_x:
				finish(true, "%s reached x=%.2f at tick %d" % [me["name"], pos.x, message["tick"]])

func finish(ok: bool, message: String) -> void:
	_done = true
	print(("PASS " if ok else "FAIL ") + message)
	if _dtls.get_status() == PacketPeerDTLS.STATUS_CONNECTED:
		_dtls.disconnect_from_peer()  # close_notify: the server sees PEER_CLOSED
	if ok or bot or quit_at_x != INF:  # a headless run: its exit code is the verdict
		get_tree().quit(0 if ok else 1)

# Godot 4 SceneMultiplayer client (ENetMultiplayerPeer + DTLS) for dtlspeer's
# send_bytes framing test.
#   godot4 --headless --path DIR --script res://scene_send_bytes_client.gd -- PORT CERT_PATH
# The SceneTree's own MultiplayerAPI (polled every frame) gets the peer; once
# connected_to_server fires it calls send_bytes("hello") (default: to everyone,
# which a client wraps in a SYS RELAY) and send_bytes("direct", 1, UNRELIABLE, 2).
# Our server answers each with send_bytes framing ("03" + "echo:" + data);
# peer_packet must report both from peer 1. Prints "PASS ..." (exit 0) or
# "FAIL ..." (exit 1) within 20 s.
extends SceneTree

var got := []
var start := 0
var connected := false

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var cert := X509Certificate.new()
	if cert.load(args[1]) != OK:
		print("FAIL cannot load certificate")
		quit(1)
		return
	var peer := ENetMultiplayerPeer.new()
	if peer.create_client("127.0.0.1", int(args[0])) != OK:
		print("FAIL create_client")
		quit(1)
		return
	peer.host.dtls_client_setup("localhost", TLSOptions.client(cert))
	var mp := get_multiplayer()
	mp.multiplayer_peer = peer
	mp.peer_packet.connect(func(id, data): got.append("%d:%s" % [id, data.get_string_from_utf8()]))
	mp.connected_to_server.connect(func():
		connected = true
		mp.send_bytes("hello".to_utf8_buffer())
		mp.send_bytes("direct".to_utf8_buffer(), 1, MultiplayerPeer.TRANSFER_MODE_UNRELIABLE, 2))
	start = Time.get_ticks_msec()

func _process(_delta: float) -> bool:
	if got.size() >= 2:
		got.sort()
		print("PASS %s" % ",".join(got))
		quit(0)
	elif Time.get_ticks_msec() - start > 20000:
		print("FAIL connected=%s got=%s" % [str(connected), str(got)])
		quit(1)
	return false

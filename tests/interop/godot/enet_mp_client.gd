# Godot 3.2 NetworkedMultiplayerENet client, for dtlspeer's Godot 3 mode test.
#   godot3-server --no-window -s enet_mp_client.gd --port=P --timeout_ms=N
# Connects, waits until the server announced another peer (ADD_PEER on the
# config channel -> peer_connected), sends "r" (reliable), "u" (unreliable)
# to the server and "b" (reliable) to everyone, expects the server's three
# echoes from peer 1, prints "PEERS <ids>", "ID <own id>" and "PASS 3", then
# closes the connection (exit 0), or "FAIL <reason>" (exit 1).
extends SceneTree

var peers := []

func arg(name: String, default_value: String) -> String:
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3)
	return default_value

func _on_peer(id):
	peers.append(id)

func fail(reason: String) -> void:
	print("FAIL " + reason)
	quit(1)

func _init() -> void:
	var deadline := OS.get_ticks_msec() + int(arg("timeout_ms", "20000"))
	var p := NetworkedMultiplayerENet.new()
	p.connect("peer_connected", self, "_on_peer")
	if p.create_client("127.0.0.1", int(arg("port", "0"))) != OK:
		fail("create_client")
		return
	while OS.get_ticks_msec() < deadline and (p.get_connection_status() != NetworkedMultiplayerPeer.CONNECTION_CONNECTED or peers.size() < 2):
		p.poll()
		OS.delay_msec(2)
	if peers.size() < 2:
		fail("peers %s" % str(peers))
		return
	print("ID %d" % p.get_unique_id())
	print("PEERS %s" % str(peers))
	p.set_target_peer(1)
	p.transfer_mode = NetworkedMultiplayerPeer.TRANSFER_MODE_RELIABLE
	p.put_packet("r".to_utf8())
	p.transfer_mode = NetworkedMultiplayerPeer.TRANSFER_MODE_UNRELIABLE
	p.put_packet("u".to_utf8())
	p.set_target_peer(0)
	p.transfer_mode = NetworkedMultiplayerPeer.TRANSFER_MODE_RELIABLE
	p.put_packet("b".to_utf8())
	var got := []
	while OS.get_ticks_msec() < deadline and got.size() < 3:
		p.poll()
		while p.get_available_packet_count() > 0:
			var from := p.get_packet_peer()
			var data := p.get_packet().get_string_from_utf8()
			if from != 1:
				fail("echo from %d" % from)
				return
			got.append(data)
		OS.delay_msec(2)
	got.sort()
	if got != ["b", "r", "u"]:
		fail("echoes %s" % str(got))
		return
	print("PASS 3")
	p.close_connection()
	quit(0)

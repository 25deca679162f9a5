# Godot 4 headless PacketPeerDTLS client for dtlspeer's put_var/get_var interop test.
#   godot4 --headless --path DIR --script res://put_var_client.gd -- PORT CERT_PATH
# Connects to 127.0.0.1:PORT validating CERT_PATH and the name "localhost",
# then for every value of its corpus: put_var(value), waits for the reply,
# get_var() and checks var_to_bytes(reply) == var_to_bytes(value) (our server
# decodes with get_var and answers with put_var). Prints "PASS <n>" and exits
# 0, or "FAIL <reason>" and exits 1. Every wait is bounded.
extends SceneTree

const TIMEOUT_MS := 30000

func corpus() -> Array:
	var typed_ints: Array[int] = [1, 2, 3]
	var typed_dict: Dictionary[String, Vector2] = {"a": Vector2(1, 2)}
	return [
		null, true, 42, -7, 2147483648, 0.1, 1.5, NAN, "hi", "héllo",
		Vector2(1.5, -2), Vector2i(3, 4), Vector3(1, 2, 3), Color(0.5, 0.25, 1, 0.75),
		Transform3D(Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9)), Vector3(10, 11, 12)),
		&"name", NodePath("/root/a:b"), RID(), Callable(), Signal(),
		{"id": 7, "pos": Vector2(1, 2), "hp": 87.5, "alive": true, "name": "bob"},
		[1, "a", [2.5, null], {"k": [1]}],
		PackedByteArray([1, 2, 3]), PackedInt32Array([1, -1]), PackedInt64Array([1 << 40]),
		PackedFloat32Array([1.5]), PackedFloat64Array([0.1]), PackedStringArray(["a", "bc"]),
		PackedVector2Array([Vector2(1, 2)]), PackedVector3Array([Vector3(1, 2, 3)]),
		PackedColorArray([Color(1, 0, 0, 1)]), PackedVector4Array([Vector4(1, 2, 3, 4)]),
		typed_ints, typed_dict,
	]

func fail(reason: String) -> void:
	print("FAIL " + reason)
	quit(1)

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var cert := X509Certificate.new()
	if cert.load(args[1]) != OK:
		fail("cannot load certificate")
		return
	var udp := PacketPeerUDP.new()
	if udp.connect_to_host("127.0.0.1", int(args[0])) != OK:
		fail("udp connect")
		return
	var dtls := PacketPeerDTLS.new()
	if dtls.connect_to_peer(udp, "localhost", TLSOptions.client(cert)) != OK:
		fail("connect_to_peer")
		return
	var deadline := Time.get_ticks_msec() + TIMEOUT_MS
	while dtls.get_status() == PacketPeerDTLS.STATUS_HANDSHAKING and Time.get_ticks_msec() < deadline:
		dtls.poll()
		OS.delay_msec(2)
	if dtls.get_status() != PacketPeerDTLS.STATUS_CONNECTED:
		fail("handshake, status %d" % dtls.get_status())
		return
	var values := corpus()
	for i in values.size():
		if dtls.put_var(values[i]) != OK:
			fail("put_var %d" % i)
			return
		while dtls.get_available_packet_count() == 0 and Time.get_ticks_msec() < deadline:
			dtls.poll()
			OS.delay_msec(1)
		if dtls.get_available_packet_count() == 0:
			fail("no reply to value %d" % i)
			return
		var reply = dtls.get_var()
		if var_to_bytes(reply) != var_to_bytes(values[i]):
			fail("value %d came back as %s" % [i, var_to_bytes(reply).hex_encode()])
			return
	dtls.disconnect_from_peer()
	print("PASS %d" % values.size())
	quit(0)

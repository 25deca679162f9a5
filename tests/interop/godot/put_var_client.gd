# Godot 3.2 headless PacketPeerDTLS client for dtlspeer's put_var/get_var interop test.
#   godot3-server --no-window -s put_var_client.gd --port=P --cert=PATH
# Connects to 127.0.0.1:P validating PATH and the name "localhost", then for
# every value of its corpus: put_var(value), waits for the reply, get_var()
# and checks var2bytes(reply) == var2bytes(value) (our server decodes with
# get_var(godot=3) and answers with put_var(godot=3)). Prints "PASS <n>" and
# exits 0, or "FAIL <reason>" and exits 1. Every wait is bounded.
extends SceneTree

var udp := PacketPeerUDP.new()
var dtls := PacketPeerDTLS.new()
var values := []
var index := 0
var waiting := false
var deadline_ms := 0
var done := false

func arg(name: String) -> String:
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3)
	return ""

func end_run(ok: bool, message: String) -> void:
	if done:
		return
	done = true
	print(("PASS " if ok else "FAIL ") + message)
	dtls.disconnect_from_peer()
	quit(0 if ok else 1)

func _init() -> void:
	var basis := Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9))
	values = [
		null, true, 42, -7, 2147483648, 0.1, 1.5, "hi", "héllo", Vector2(1.5, -2),
		Rect2(1, 2, 3, 4), Vector3(1, 2, 3), Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)),
		Plane(Vector3(0, 1, 0), 5), Quat(0.5, 0.25, 0.125, 1), AABB(Vector3(1, 2, 3), Vector3(4, 5, 6)),
		basis, Transform(basis, Vector3(10, 11, 12)), Color(0.5, 0.25, 1, 0.75), RID(),
		{"id": 7, "pos": Vector2(1, 2), "hp": 87.5, "alive": true, "name": "bob"},
		[1, "a", [2.5, null], {"k": [1]}],
		PoolByteArray([1, 2, 3]), PoolIntArray([1, -1]), PoolRealArray([1.5]),
		PoolStringArray(["a", "bc"]), PoolVector2Array([Vector2(1, 2)]),
		PoolVector3Array([Vector3(1, 2, 3)]), PoolColorArray([Color(1, 0, 0, 1)]),
	]
	deadline_ms = OS.get_ticks_msec() + 30000
	var cert := X509Certificate.new()
	if cert.load(arg("cert")) != OK:
		end_run(false, "cannot load certificate")
		return
	if udp.connect_to_host("127.0.0.1", int(arg("port"))) != OK:
		end_run(false, "udp connect failed")
		return
	if dtls.connect_to_peer(udp, true, "localhost", cert) != OK:
		end_run(false, "connect_to_peer failed")

func _idle(_delta: float) -> bool:
	if done:
		return true
	if OS.get_ticks_msec() > deadline_ms:
		end_run(false, "timeout at value %d, status %d" % [index, dtls.get_status()])
		return true
	dtls.poll()
	var status := dtls.get_status()
	if status == PacketPeerDTLS.STATUS_CONNECTED:
		if waiting and dtls.get_available_packet_count() > 0:
			var reply = dtls.get_var()
			if var2bytes(reply) != var2bytes(values[index]):
				end_run(false, "value %d came back as %s" % [index, var2bytes(reply).hex_encode()])
				return true
			waiting = false
			index += 1
		if index == values.size():
			end_run(true, str(index))
			return true
		if not waiting:
			if dtls.put_var(values[index]) != OK:
				end_run(false, "put_var %d" % index)
				return true
			waiting = true
	elif status != PacketPeerDTLS.STATUS_HANDSHAKING:
		end_run(false, "status %d" % status)
	OS.delay_msec(1)
	return false

# Godot 3.2 headless Variant round trip, used by dtlspeer's interop tests.
#   godot3-server --no-window -s variant_roundtrip.gd --in=PATH --out=PATH
# IN holds one hex encoding per line (made by dtlspeer): each is decoded with
# bytes2var and re-encoded with var2bytes ("R <hex>" lines in OUT). Then
# Godot's own corpus, every 3.x type, is written as "C <hex>" lines.
# Exits 0 once OUT is written, 1 on a file error.
extends SceneTree

func arg(name: String) -> String:
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3)
	return ""

func hex_decode(text: String) -> PoolByteArray:
	var out := PoolByteArray()
	for i in range(0, text.length(), 2):
		out.append(("0x" + text.substr(i, 2)).hex_to_int())
	return out

func corpus() -> Array:
	var basis := Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9))
	return [
		null, true, false, 0, 1, -1, 2147483647, -2147483648, 2147483648,
		-9223372036854775807 - 1, 9223372036854775807,
		1.0, 0.1, -0.0, INF, -INF, NAN, 1e300, 16777217.0,
		"", "a", "abcd", "héllo", "line\nbreak",
		Vector2(1.5, -2), Rect2(1, 2, 3, 4), Vector3(1, 2, 3),
		Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)), Plane(Vector3(0, 1, 0), 5),
		Quat(0.1, 0.2, 0.3, 0.9), AABB(Vector3(1, 2, 3), Vector3(4, 5, 6)), basis,
		Transform(basis, Vector3(10, 11, 12)), Color(0.5, 0.25, 1, 0.75),
		NodePath("/root/a:b:c"), NodePath("a/b"), NodePath(""), RID(),
		{1: "a", "k": [1, 2.5, {"n": null}], Vector2(1, 2): "v", 0.5: true},
		[1, "a", [[]], {}, [null, [PoolByteArray()]]],
		PoolByteArray([1, 2, 3]), PoolByteArray([1, 2, 3, 4, 5]), PoolIntArray([1, -1]),
		PoolRealArray([1.5, 0.1]), PoolStringArray(["ab", "", "héllo"]),
		PoolVector2Array([Vector2(1, 2), Vector2(3, 4)]), PoolVector3Array([Vector3(1, 2, 3)]),
		PoolColorArray([Color(1, 0, 0, 1)]),
	]

func _init() -> void:
	var source := File.new()
	var out := File.new()
	if source.open(arg("in"), File.READ) != OK or out.open(arg("out"), File.WRITE) != OK:
		print("FAIL cannot open files")
		quit(1)
		return
	while not source.eof_reached():
		var line := source.get_line().strip_edges()
		if line == "":
			continue
		out.store_line("R " + var2bytes(bytes2var(hex_decode(line))).hex_encode())
	for value in corpus():
		out.store_line("C " + var2bytes(value).hex_encode())
	out.close()
	source.close()
	print("PASS")
	quit(0)

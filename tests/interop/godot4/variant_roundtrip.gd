# Godot 4 headless Variant round trip, used by dtlspeer's interop tests.
#   godot4 --headless --path DIR --script res://variant_roundtrip.gd -- IN OUT
# IN holds one hex encoding per line (made by dtlspeer): each is decoded with
# bytes_to_var and re-encoded with var_to_bytes ("R <hex>" lines in OUT).
# Then Godot's own corpus, every 4.x type, is written as "C <hex>" lines.
# Exits 0 once OUT is written, 1 on a file error.
extends SceneTree

func corpus() -> Array:
	var typed_ints: Array[int] = [1, 2, 3]
	var typed_names: Array[StringName] = [&"a", &"b"]
	var typed_vectors: Array[Vector3] = [Vector3(1, 2, 3)]
	var nodes: Array[Node] = []
	var typed_dict: Dictionary[String, int] = {"a": 1, "b": 2}
	var typed_keys: Dictionary[int, Variant] = {1: "x", 2: [1]}
	var typed_values: Dictionary[Variant, Vector3] = {"p": Vector3(1, 2, 3)}
	var node_values: Dictionary[StringName, Node] = {}
	var basis := Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9))
	return [
		null, true, false, 0, 1, -1, 2147483647, -2147483648, 2147483648,
		-9223372036854775807 - 1, 9223372036854775807,
		1.0, 0.1, -0.0, INF, -INF, NAN, 1e300, 16777217.0, 3.4028234663852886e38, 5e-324,
		"", "a", "abcd", "héllo", "😀", "line\nbreak \"quoted\"",
		Vector2(1.5, -2), Vector2(NAN, INF), Vector2i(1, -2), Rect2(1, 2, 3, 4), Rect2i(1, 2, 3, 4),
		Vector3(1, 2, 3), Vector3i(1, 2, -3),
		Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)),
		Vector4(1, 2, 3, 4), Vector4i(1, 2, 3, -4), Plane(Vector3(0, 1, 0), 5),
		Quaternion(0.1, 0.2, 0.3, 0.9), AABB(Vector3(1, 2, 3), Vector3(4, 5, 6)), basis,
		Transform3D(basis, Vector3(10, 11, 12)),
		Projection(Vector4(1, 2, 3, 4), Vector4(5, 6, 7, 8), Vector4(9, 10, 11, 12), Vector4(13, 14, 15, 16)),
		Color(0.5, 0.25, 1, 0.75), &"name", &"", NodePath("/root/a:b:c"), NodePath("a/b"),
		NodePath(":prop"), NodePath(""), RID(), Callable(), Signal(),
		{1: "a", "k": [1, 2.5, {"n": null}], Vector2(1, 2): &"v", 0.5: true},
		[1, "a", [[]], {}, [null, [PackedByteArray()]]],
		PackedByteArray([1, 2, 3]), PackedByteArray([1, 2, 3, 4, 5]), PackedInt32Array([1, -1]),
		PackedInt64Array([1, -1, 9223372036854775807]), PackedFloat32Array([1.5, 0.1, NAN]),
		PackedFloat64Array([1.5, 0.1, NAN]), PackedStringArray(["ab", "", "héllo"]),
		PackedVector2Array([Vector2(1, 2), Vector2(3, 4)]), PackedVector3Array([Vector3(1, 2, 3)]),
		PackedColorArray([Color(1, 0, 0, 1)]), PackedVector4Array([Vector4(1, 2, 3, 4)]),
		typed_ints, typed_names, typed_vectors, nodes, typed_dict, typed_keys, typed_values,
		node_values,
	]

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var source := FileAccess.open(args[0], FileAccess.READ)
	var out := FileAccess.open(args[1], FileAccess.WRITE)
	if source == null or out == null:
		print("FAIL cannot open files")
		quit(1)
		return
	while not source.eof_reached():
		var line := source.get_line().strip_edges()
		if line == "":
			continue
		out.store_line("R " + var_to_bytes(bytes_to_var(line.hex_decode())).hex_encode())
	for value in corpus():
		out.store_line("C " + var_to_bytes(value).hex_encode())
	out.close()
	print("PASS")
	quit(0)

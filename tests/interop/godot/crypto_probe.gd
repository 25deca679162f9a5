# Godot 3.2.3 side of dtlspeer's Crypto-family check (issue 12 section 5).
#   godot3-server --no-window -s crypto_probe.gd --in=IN --out=OUT
# Writes which Crypto-family classes and methods this engine has ("class:X
# true|false", "method:Crypto.m ..."), HashingContext's enum values, its
# answers to misuse, and "H <md5> <sha1> <sha256>" for each hex message of
# IN (hashed in two chunks). Prints PASS once OUT is written.
extends SceneTree

func arg(name):
	for a in OS.get_cmdline_args():
		if a.begins_with("--" + name + "="):
			return a.substr(name.length() + 3, a.length())
	return ""

func verdict(refused):
	return "refused" if refused else "accepted"

func _init():
	var out = File.new()
	if out.open(arg("out"), File.WRITE) != OK:
		quit(1)
		return
	for name in ["HashingContext", "AESContext", "HMACContext", "Crypto"]:
		out.store_line("class:%s %s" % [name, str(ClassDB.class_exists(name)).to_lower()])
	for m in ["sign", "verify", "encrypt", "decrypt", "hmac_digest", "constant_time_compare"]:
		out.store_line("method:%s %s" % [m, str(ClassDB.class_has_method("Crypto", m)).to_lower()])
	out.store_line("enum:HASH_MD5 %d" % HashingContext.HASH_MD5)
	out.store_line("enum:HASH_SHA1 %d" % HashingContext.HASH_SHA1)
	out.store_line("enum:HASH_SHA256 %d" % HashingContext.HASH_SHA256)
	var h = HashingContext.new()
	out.store_line("misuse:update_before_start " + verdict(h.update(PoolByteArray([1])) != OK))
	out.store_line("misuse:finish_before_start " + verdict(h.finish().size() == 0))
	h.start(HashingContext.HASH_SHA256)
	out.store_line("misuse:start_twice " + verdict(h.start(HashingContext.HASH_SHA256) != OK))
	h.finish()
	var source = File.new()
	if source.open(arg("in"), File.READ) != OK:
		quit(1)
		return
	while not source.eof_reached():
		var line = source.get_line().strip_edges()
		if line == "":
			continue
		var data = PoolByteArray()
		for i in range(0, line.length(), 2):
			data.append(("0x" + line.substr(i, 2)).hex_to_int())
		var row = []
		for kind in [HashingContext.HASH_MD5, HashingContext.HASH_SHA1, HashingContext.HASH_SHA256]:
			var ctx = HashingContext.new()
			ctx.start(kind)
			var half = data.size() / 2
			if half > 0:
				ctx.update(data.subarray(0, half - 1))
			ctx.update(data.subarray(half, data.size() - 1))
			row.append(ctx.finish().hex_encode())
		out.store_line("H " + PoolStringArray(row).join(" "))
	out.close()
	print("PASS")
	quit(0)

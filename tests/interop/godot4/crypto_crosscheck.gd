# Godot 4 side of dtlspeer's Crypto-family cross-check (issue 12 section 5).
#   godot4 --headless --path DIR --script res://crypto_crosscheck.gd -- IN.json OUT.json
# IN (made by dtlspeer): keys, messages, HMAC keys, AES jobs, dtlspeer's
# signatures and RSA ciphertexts. OUT: Godot's hashes, HMACs and AES
# outputs of the same inputs, its verdicts on dtlspeer's signatures, its
# decryptions of dtlspeer's ciphertexts, its own signatures and ciphertexts
# (with dtlspeer's keys and a key it generated), and what it returns for
# each misuse case. Prints PASS and exits 0 once OUT is written.
extends SceneTree

var crypto := Crypto.new()

func key_from(pem: String, public_only: bool) -> CryptoKey:
	var key := CryptoKey.new()
	var err := key.load_from_string(pem, public_only)
	if err != OK:
		push_error("key load failed: %d" % err)
	return key

func hash_of(kind: int, data: PackedByteArray) -> PackedByteArray:
	var ctx := HashingContext.new()
	ctx.start(kind)
	ctx.update(data)
	return ctx.finish()

# Godot's answer to a misuse and whether it refused the call: an Error other
# than OK, an empty array, or false.
func refused(answer) -> Dictionary:
	var no := false
	match typeof(answer):
		TYPE_BOOL:
			no = not answer
		TYPE_INT:
			no = answer != OK
		TYPE_PACKED_BYTE_ARRAY:
			no = answer.is_empty()
			answer = answer.hex_encode()
	return {"answer": answer, "refused": no}

func misuse(keys: Dictionary) -> Dictionary:
	var out := {}
	var h := HashingContext.new()
	out["hashing_update_before_start"] = refused(h.update(PackedByteArray([1])))
	out["hashing_finish_before_start"] = refused(h.finish())
	out["hashing_unknown_type"] = refused(h.start(7))
	h.start(HashingContext.HASH_SHA256)
	out["hashing_start_twice"] = refused(h.start(HashingContext.HASH_SHA256))
	out["hashing_update_empty"] = refused(h.update(PackedByteArray()))
	h.finish()
	var m := HMACContext.new()
	out["hmac_update_before_start"] = refused(m.update(PackedByteArray([1])))
	out["hmac_finish_before_start"] = refused(m.finish())
	out["hmac_start_md5"] = refused(m.start(HashingContext.HASH_MD5, "key".to_utf8_buffer()))
	out["hmac_empty_key"] = refused(m.start(HashingContext.HASH_SHA256, PackedByteArray()))
	m.start(HashingContext.HASH_SHA256, "key".to_utf8_buffer())
	out["hmac_start_twice"] = refused(m.start(HashingContext.HASH_SHA256, "key".to_utf8_buffer()))
	out["hmac_update_empty"] = refused(m.update(PackedByteArray()))
	m.finish()
	out["hmac_digest_empty_msg"] = refused(crypto.hmac_digest(HashingContext.HASH_SHA256, "key".to_utf8_buffer(), PackedByteArray()))
	out["hmac_digest_md5"] = refused(crypto.hmac_digest(HashingContext.HASH_MD5, "key".to_utf8_buffer(), "m".to_utf8_buffer()))
	var a := AESContext.new()
	var zero16 := PackedByteArray()
	zero16.resize(16)
	var zero24 := PackedByteArray()
	zero24.resize(24)
	var zero15 := PackedByteArray()
	zero15.resize(15)
	out["aes_update_before_start"] = refused(a.update(zero16))
	out["aes_key_24"] = refused(a.start(AESContext.MODE_ECB_ENCRYPT, zero24))
	out["aes_key_empty"] = refused(a.start(AESContext.MODE_ECB_ENCRYPT, PackedByteArray()))
	out["aes_mode_max"] = refused(a.start(AESContext.MODE_MAX, zero16))
	out["aes_cbc_iv_15"] = refused(a.start(AESContext.MODE_CBC_ENCRYPT, zero16, zero15))
	out["aes_cbc_no_iv"] = refused(a.start(AESContext.MODE_CBC_ENCRYPT, zero16))
	a.start(AESContext.MODE_ECB_ENCRYPT, zero16)
	out["aes_start_twice"] = refused(a.start(AESContext.MODE_ECB_ENCRYPT, zero16))
	out["aes_update_15"] = refused(a.update(zero15))
	out["aes_ecb_iv_state"] = refused(a.get_iv_state())
	a.finish()
	a.finish()
	out["aes_update_after_finish"] = refused(a.update(zero16))
	var rsa: CryptoKey = keys["rsa"]
	var rsa_pub: CryptoKey = keys["rsa_pub"]
	var ec: CryptoKey = keys["ec"]
	var digest := hash_of(HashingContext.HASH_SHA256, "m".to_utf8_buffer())
	var good := crypto.sign(HashingContext.HASH_SHA256, digest, rsa)
	out["sign_wrong_hash_size"] = refused(crypto.sign(HashingContext.HASH_SHA256, digest.slice(0, 20), rsa))
	out["sign_public_key"] = refused(crypto.sign(HashingContext.HASH_SHA256, digest, rsa_pub))
	out["sign_empty_key"] = refused(crypto.sign(HashingContext.HASH_SHA256, digest, CryptoKey.new()))
	out["verify_wrong_hash_size"] = refused(crypto.verify(HashingContext.HASH_SHA256, digest.slice(0, 20), good, rsa_pub))
	var long := PackedByteArray()
	long.resize(246)
	out["encrypt_too_long"] = refused(crypto.encrypt(rsa_pub, long))
	out["encrypt_ec"] = refused(crypto.encrypt(ec, "m".to_utf8_buffer()))
	out["decrypt_public_key"] = refused(crypto.decrypt(rsa_pub, crypto.encrypt(rsa_pub, "m".to_utf8_buffer())))
	var garbage := PackedByteArray()
	garbage.resize(256)
	out["decrypt_garbage"] = refused(crypto.decrypt(rsa, garbage))
	out["decrypt_short"] = refused(crypto.decrypt(rsa, garbage.slice(0, 100)))
	out["constant_time_compare_lengths"] = refused(crypto.constant_time_compare(PackedByteArray([1]), PackedByteArray([1, 2])))
	return out

func _initialize() -> void:
	var args := OS.get_cmdline_user_args()
	var text := FileAccess.get_file_as_string(args[0])
	var job = JSON.parse_string(text)
	if typeof(job) != TYPE_DICTIONARY:
		push_error("bad input")
		quit(1)
		return
	var keys := {
		"rsa": key_from(job["rsa_pem"], false), "rsa_pub": key_from(job["rsa_pub_pem"], true),
		"ec": key_from(job["ec_pem"], false), "ec_pub": key_from(job["ec_pub_pem"], true),
	}
	var generated := crypto.generate_rsa(2048)
	keys["grsa"] = generated
	var out := {"engine": Engine.get_version_info()["string"]}
	out["grsa_pem"] = generated.save_to_string(false)

	var hashes := []
	for message in job["messages"]:
		var data: PackedByteArray = message.hex_decode()
		var row := []
		for kind in [HashingContext.HASH_MD5, HashingContext.HASH_SHA1, HashingContext.HASH_SHA256]:
			# Two chunks when possible: chunking must not matter.
			var ctx := HashingContext.new()
			ctx.start(kind)
			var half := data.size() / 2
			if half > 0:
				ctx.update(data.slice(0, half))
			if data.size() - half > 0:
				ctx.update(data.slice(half))
			row.append(ctx.finish().hex_encode())
		hashes.append(row)
	out["hashes"] = hashes

	var hmacs := []
	var hmac_keys: Array = job["hmac_keys"]
	for i in range(job["messages"].size()):
		var data: PackedByteArray = job["messages"][i].hex_decode()
		var key: PackedByteArray = hmac_keys[i % hmac_keys.size()].hex_decode()
		hmacs.append([
			crypto.hmac_digest(HashingContext.HASH_SHA1, key, data).hex_encode(),
			crypto.hmac_digest(HashingContext.HASH_SHA256, key, data).hex_encode(),
		])
	out["hmacs"] = hmacs

	var aes_out := []
	var iv_states := []
	for job_aes in job["aes"]:
		var ctx := AESContext.new()
		var err := ctx.start(int(job_aes["mode"]), job_aes["key"].hex_decode(), job_aes["iv"].hex_decode())
		if err != OK:
			push_error("aes start failed: %d" % err)
		var result := PackedByteArray()
		for chunk in job_aes["chunks"]:
			result.append_array(ctx.update(chunk.hex_decode()))
		iv_states.append(ctx.get_iv_state().hex_encode())
		ctx.finish()
		aes_out.append(result.hex_encode())
	out["aes"] = aes_out
	out["aes_iv_states"] = iv_states

	var verdicts := []
	for s in job["our_signatures"]:
		var key: CryptoKey = keys[s["key"] + "_pub"]
		verdicts.append(crypto.verify(int(s["type"]), s["hash"].hex_decode(), s["sig"].hex_decode(), key))
	out["our_signatures_valid"] = verdicts

	var plains := []
	for ct in job["our_ciphertexts"]:
		plains.append(crypto.decrypt(keys["rsa"], ct.hex_decode()).hex_encode())
	out["our_ciphertexts_decrypted"] = plains

	var signatures := []
	for key_name in ["rsa", "ec", "grsa"]:
		for kind in [HashingContext.HASH_MD5, HashingContext.HASH_SHA1, HashingContext.HASH_SHA256]:
			for message in job["messages"]:
				var digest := hash_of(kind, message.hex_decode())
				var sig := crypto.sign(kind, digest, keys[key_name])
				signatures.append({"key": key_name, "type": kind, "hash": digest.hex_encode(), "sig": sig.hex_encode()})
	out["godot_signatures"] = signatures

	var ciphertexts := []
	for key_name in ["rsa_pub", "grsa"]:
		for size in [0, 1, 100, 245]:
			var plain := crypto.generate_random_bytes(size)
			ciphertexts.append({"key": key_name, "plain": plain.hex_encode(),
				"ct": crypto.encrypt(keys[key_name], plain).hex_encode()})
	out["godot_ciphertexts"] = ciphertexts
	out["misuse"] = misuse(keys)

	var file := FileAccess.open(args[1], FileAccess.WRITE)
	if file == null:
		quit(1)
		return
	file.store_string(JSON.stringify(out))
	file.close()
	print("PASS")
	quit(0)

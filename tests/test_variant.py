"""dtlspeer.variant against the bytes real Godot runtimes produced
(shared/reference/godot-wire.md §1-2: rt4 = 4.8-dev, rt3 = 3.2.3), round trips
both ways, hostile input and a bounded seeded fuzz of the decoder."""

from __future__ import annotations

import math
import pickle
import random
import struct
import sys
import time
from array import array
from typing import Any

import pytest

from dtlspeer import errors
from dtlspeer.variant import (
    AABB,
    RID,
    Basis,
    Callable,
    Color,
    ContainerType,
    EncodedObject,
    Float32,
    Float64,
    Int64,
    NodePath,
    ObjectID,
    PackedColorArray,
    PackedStringArray,
    PackedVector2Array,
    PackedVector3Array,
    PackedVector4Array,
    Plane,
    Projection,
    Quaternion,
    Rect2,
    Rect2i,
    Signal,
    StringName,
    Transform2D,
    Transform3D,
    TypedArray,
    TypedDictionary,
    VariantDecodeError,
    VariantType,
    Vector2,
    Vector2i,
    Vector3,
    Vector3i,
    Vector4,
    Vector4i,
    bytes2var,
    bytes_to_var,
    decode_var,
    is_real64,
    real64,
    var2bytes,
    var_to_bytes,
)


def f32s(*values: float) -> str:
    return struct.pack(f"<{len(values)}f", *values).hex()


def f64s(*values: float) -> str:
    return struct.pack(f"<{len(values)}d", *values).hex()


def gstr(text: str) -> str:
    """A length-prefixed, zero-padded string as Godot writes it."""
    raw = text.encode()
    return (struct.pack("<I", len(raw)) + raw + b"\0" * (-len(raw) & 3)).hex()


BASIS = Basis(Vector3(1, 2, 3), Vector3(4, 5, 6), Vector3(7, 8, 9))
OBJ_AS_ID = "EncodedObjectAsID"

# (value, hex that rt4 var_to_bytes produced)
GODOT4 = [
    (None, "00000000"),
    (True, "0100000001000000"),
    (False, "0100000000000000"),
    (1, "0200000001000000"),
    (-1, "02000000ffffffff"),
    (2147483647, "02000000ffffff7f"),
    (-2147483648, "0200000000000080"),
    (2147483648, "020001000000008000000000"),
    (-2147483649, "02000100ffffff7fffffffff"),
    (9223372036854775807, "02000100ffffffffffffff7f"),
    (1.0, "030000000000803f"),
    (0.5, "030000000000003f"),
    (-0.0, "0300000000000080"),
    (math.inf, "030000000000807f"),
    (-math.inf, "03000000000080ff"),
    (0.1, "030001009a9999999999b93f"),
    (16777217.0, "030001000000001000007041"),
    (1e-45, "03000100b96a37ad01d69636"),
    # GDScript parsed the literal 1e39 one ulp away from Python's 1e39.
    (struct.unpack("<d", bytes.fromhex("1e4a9cf487820748"))[0], "030001001e4a9cf487820748"),
    (1e300, "030001009c7500883ce4377e"),
    ("a", "040000000100000061000000"),
    ("abcd", "040000000400000061626364"),
    ("héllo", "040000000600000068c3a96c6c6f0000"),
    ("", "0400000000000000"),
    ("😀", "0400000004000000f09f9880"),
    (Vector2(1, 2), "050000000000803f00000040"),
    (Vector2i(1, -2), "0600000001000000feffffff"),
    (Rect2(Vector2(1, 2), Vector2(3, 4)), "07000000" + f32s(1, 2, 3, 4)),
    (Rect2i(Vector2i(1, 2), Vector2i(3, 4)), "0800000001000000020000000300000004000000"),
    (Vector3(1, 2, 3), "090000000000803f0000004000004040"),
    (Vector3i(1, 2, 3), "0a000000010000000200000003000000"),
    (Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)), "0b000000" + f32s(1, 2, 3, 4, 5, 6)),
    (Vector4(1, 2, 3, 4), "0c0000000000803f000000400000404000008040"),
    (Vector4i(1, 2, 3, 4), "0d00000001000000020000000300000004000000"),
    (Plane(Vector3(1, 2, 3), 4), "0e0000000000803f000000400000404000008040"),
    (Quaternion(1, 2, 3, 4), "0f0000000000803f000000400000404000008040"),
    (
        AABB(Vector3(1, 2, 3), Vector3(4, 5, 6)),
        "100000000000803f0000004000004040000080400000a0400000c040",
    ),
    (BASIS, "11000000" + f32s(1, 4, 7, 2, 5, 8, 3, 6, 9)),
    (
        Transform3D(BASIS, Vector3(10, 11, 12)),
        "12000000" + f32s(1, 4, 7, 2, 5, 8, 3, 6, 9, 10, 11, 12),
    ),
    (
        Projection(
            Vector4(1, 2, 3, 4),
            Vector4(5, 6, 7, 8),
            Vector4(9, 10, 11, 12),
            Vector4(13, 14, 15, 16),
        ),
        "13000000" + f32s(*range(1, 17)),
    ),
    (Color(0.5, 0.25, 1, 0.75), "140000000000003f0000803e0000803f0000403f"),
    (StringName("abc"), "150000000300000061626300"),
    (StringName(""), "1500000000000000"),
    (
        NodePath.parse("a/b:c:d"),
        "16000000020000800200000000000000010000006100000001000000620000000100000063000000"
        "0100000064000000",
    ),
    (NodePath.parse("/root/x"), "1600000002000080000000000100000004000000726f6f740100000078000000"),
    (NodePath.parse(":prop"), "160000000000008001000000000000000400000070726f70"),
    (NodePath.parse(""), "16000000000000800000000000000000"),
    (RID(0), "170000000000000000000000"),
    (RID(0x0102030405060708), "170000000807060504030201"),
    (ObjectID(0x3A3000346), "18000100460300a303000000"),
    (ObjectID(0x80000003A7000349), "18000100490300a703000080"),
    (Callable(), "19000000"),
    (Signal(), "1a000000000000000000000000000000"),
    (
        Signal("tree_changed", 0x383000338),
        "1a0000000c000000" + b"tree_changed".hex() + "3803008303000000",
    ),
    ({1: "a"}, "1b000000010000000200000001000000040000000100000061000000"),
    ([1, "a"], "1c000000020000000200000001000000040000000100000061000000"),
    (b"\x01\x02\x03", "1d0000000300000001020300"),
    (b"\x01\x02\x03\x04", "1d0000000400000001020304"),
    (b"\x01\x02\x03\x04\x05", "1d000000050000000102030405000000"),
    (b"", "1d00000000000000"),
    (array("i", [1, -1]), "1e0000000200000001000000ffffffff"),
    (array("q", [1, -1]), "1f000000020000000100000000000000ffffffffffffffff"),
    (array("f", [1.5, 0.1]), "20000000020000000000c03fcdcccc3d"),
    (array("d", [1.5, 0.1]), "2100000002000000000000000000f83f9a9999999999b93f"),
    (
        PackedStringArray(["ab", "", "abc"]),
        "2200000003000000030000006162000001000000000000000400000061626300",
    ),
    (PackedVector2Array([Vector2(1, 2)]), "23000000010000000000803f00000040"),
    (PackedVector3Array([Vector3(1, 2, 3)]), "24000000010000000000803f0000004000004040"),
    (PackedColorArray([Color(1, 0, 0, 1)]), "25000000010000000000803f00000000000000000000803f"),
    (PackedVector4Array([Vector4(1, 2, 3, 4)]), "26000000010000000000803f000000400000404000008040"),
    (
        [1, 2.5, "s", Vector2i(1, 2), None, True, {"k": [1]}],
        "1c000000 07000000 02000000 01000000 03000000 00002040 04000000 01000000 73000000"
        " 06000000 01000000 02000000 00000000 01000000 01000000 1b000000 01000000 04000000"
        " 01000000 6b000000 1c000000 01000000 02000000 01000000".replace(" ", ""),
    ),
    # Typed containers (4.3+/4.4+)
    (
        TypedArray(ContainerType.of(VariantType.INT), [1, 2]),
        "1c000100 02000000 02000000 02000000 01000000 02000000 02000000".replace(" ", ""),
    ),
    (TypedArray(ContainerType.of_class(OBJ_AS_ID), []), "1c000200" + gstr(OBJ_AS_ID) + "00000000"),
    (TypedArray(ContainerType.of(VariantType.STRING_NAME), []), "1c00010015000000" + "00000000"),
    (
        TypedDictionary(
            ContainerType.of(VariantType.STRING), ContainerType.of(VariantType.INT), {"a": 1}
        ),
        "1b000500" + "0400000002000000" + "01000000" + "04000000" + gstr("a") + "0200000001000000",
    ),
    (
        TypedDictionary(ContainerType.of(VariantType.INT), None, {}),
        "1b000100" + "02000000" + "00000000",
    ),
    (
        TypedDictionary(None, ContainerType.of_class(OBJ_AS_ID), {}),
        "1b000800" + gstr(OBJ_AS_ID) + "00000000",
    ),
    (
        TypedDictionary(
            ContainerType.of(VariantType.STRING_NAME),
            ContainerType.of(VariantType.PACKED_BYTE_ARRAY),
            {},
        ),
        "1b000500" + "150000001d000000" + "00000000",
    ),
]

# The same written with full_objects (rt4 var_to_bytes_with_objects)
GODOT4_FULL = [
    (TypedArray(ContainerType.of_class("Node"), []), "1c000200" + gstr("Node") + "00000000"),
    (
        TypedArray(ContainerType.of_script("res://myres.gd"), []),
        "1c000300" + gstr("res://myres.gd") + "00000000",
    ),
    (
        TypedDictionary(
            ContainerType.of_script("res://myres.gd"), ContainerType.of(VariantType.ARRAY), {}
        ),
        "1b000700" + gstr("res://myres.gd") + "1c000000" + "00000000",
    ),
    (
        EncodedObject("RefCounted", {"script": None}),
        "18000000" + gstr("RefCounted") + "01000000" + gstr("script") + "00000000",
    ),
]

# (value, hex that rt3 var2bytes produced)
GODOT3 = [
    (None, "00000000"),
    (True, "0100000001000000"),
    (1, "0200000001000000"),
    (2147483648, "020001000000008000000000"),
    (-2147483649, "02000100ffffff7fffffffff"),
    (1.0, "030000000000803f"),
    (0.1, "030001009a9999999999b93f"),
    (math.inf, "030000000000807f"),
    ("a", "040000000100000061000000"),
    ("héllo", "040000000600000068c3a96c6c6f0000"),
    (Vector2(1, 2), "050000000000803f00000040"),
    (Rect2(Vector2(1, 2), Vector2(3, 4)), "060000000000803f000000400000404000008040"),
    (Vector3(1, 2, 3), "070000000000803f0000004000004040"),
    (Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)), "08000000" + f32s(1, 2, 3, 4, 5, 6)),
    (Plane(Vector3(1, 2, 3), 4), "090000000000803f000000400000404000008040"),
    (Quaternion(1, 2, 3, 4), "0a0000000000803f000000400000404000008040"),
    (AABB(Vector3(1, 2, 3), Vector3(4, 5, 6)), "0b000000" + f32s(1, 2, 3, 4, 5, 6)),
    (BASIS, "0c000000" + f32s(1, 4, 7, 2, 5, 8, 3, 6, 9)),
    (
        Transform3D(BASIS, Vector3(10, 11, 12)),
        "0d000000" + f32s(1, 4, 7, 2, 5, 8, 3, 6, 9, 10, 11, 12),
    ),
    (Color(0.5, 0.25, 1, 0.75), "0e0000000000003f0000803e0000803f0000403f"),
    (RID(), "10000000"),
    (ObjectID(0x508), "110001000805000000000000"),
    ({1: "a"}, "12000000010000000200000001000000040000000100000061000000"),
    ([1, "a"], "13000000020000000200000001000000040000000100000061000000"),
    (b"\x01\x02\x03", "140000000300000001020300"),
    (array("i", [1, -1]), "150000000200000001000000ffffffff"),
    (array("f", [1.5, 0.1]), "16000000020000000000c03fcdcccc3d"),
    (
        PackedStringArray(["ab", "", "abc"]),
        "1700000003000000030000006162000001000000000000000400000061626300",
    ),
    (PackedVector2Array([Vector2(1, 2)]), "18000000010000000000803f00000040"),
    (PackedVector3Array([Vector3(1, 2, 3)]), "19000000010000000000803f0000004000004040"),
    (PackedColorArray([Color(1, 0, 0, 1)]), "1a000000010000000000803f00000000000000000000803f"),
]


def same(a: Any, b: Any, in_math: bool = False) -> bool:
    """Equality that also checks the exact Python types, recursively (inside a
    math value class, where we write ints for brevity, only the value)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b) and (in_math or type(a) is type(b))
    if in_math and {type(a), type(b)} <= {int, float}:
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    if isinstance(a, (list, tuple)):
        math_class = isinstance(a, tuple) and type(a) not in (NodePath, Signal, EncodedObject)
        return len(a) == len(b) and all(same(x, y, math_class) for x, y in zip(a, b))
    if isinstance(a, array):
        return a.typecode == b.typecode and a.tobytes() == b.tobytes()
    return bool(a == b)


@pytest.mark.parametrize(("value", "hexed"), GODOT4, ids=[repr(v)[:40] for v, _ in GODOT4])
def test_godot4_vectors_encode_and_decode(value: Any, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert var_to_bytes(value).hex() == hexed
    decoded = bytes_to_var(data)
    assert same(decoded, value), (decoded, value)
    assert var_to_bytes(decoded) == data


@pytest.mark.parametrize(("value", "hexed"), GODOT4_FULL)
def test_godot4_full_object_vectors(value: Any, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert var_to_bytes(value, full_objects=True).hex() == hexed
    decoded = bytes_to_var(data, allow_objects=True)
    assert same(decoded, value)
    assert var_to_bytes(decoded, full_objects=True) == data


def test_without_full_objects_class_typed_containers_become_encoded_object_as_id() -> None:
    # rt4: Array[Node] and Array[MyRes] written with plain var_to_bytes.
    for ctype in (ContainerType.of_class("Node"), ContainerType.of_script("res://myres.gd")):
        data = var_to_bytes(TypedArray(ctype, []))
        assert data.hex() == "1c000200" + gstr(OBJ_AS_ID) + "00000000"
    with pytest.raises(errors.InvalidArgumentError, match="full_objects"):
        var_to_bytes(EncodedObject("Node", {}))


@pytest.mark.parametrize(("value", "hexed"), GODOT3, ids=[repr(v)[:40] for v, _ in GODOT3])
def test_godot3_vectors_encode_and_decode(value: Any, hexed: str) -> None:
    data = bytes.fromhex(hexed)
    assert var2bytes(value, godot=3).hex() == hexed
    decoded = bytes2var(data, godot=3)
    assert same(decoded, value), (decoded, value)
    assert var_to_bytes(decoded, godot=3) == data


def test_godot3_node_path_pad_content_is_ignored() -> None:
    # rt3 leaves uninitialised memory in NodePath padding ("a/b:c:d").
    data = bytes.fromhex(
        "0f0000000200008002000000000000000100000061000041010000006200c040"
        "01000000630020410100000064004041"
    )
    path = bytes_to_var(data, godot=3)
    assert path == NodePath.parse("a/b:c:d")
    assert str(path) == "a/b:c:d"
    assert bytes_to_var(
        bytes.fromhex("0f000000010000800000000000000000010000006100ffff"), godot=3
    ) == (NodePath.parse("a"))


def test_godot3_rejects_4x_only_types_and_4x_ids_differ() -> None:
    for value in (Vector2i(1, 2), StringName("a"), Callable(), Signal(), array("q", [1]),
                  array("d", [1.0]), PackedVector4Array(), TypedArray(ContainerType.of(2), []),
                  real64(Vector2(1, 2))):  # fmt: skip
        with pytest.raises(errors.ArgumentTypeError):
            var_to_bytes(value, godot=3)
    # 3.x 6 = Rect2 but 4.x 6 = Vector2i: the formats are not interchangeable.
    data = var_to_bytes(Rect2(), godot=3)
    assert type(bytes_to_var(data, godot=4)) is Vector2i
    # 3.x math types ignore bit 16; INT/REAL honour it.
    assert bytes_to_var(bytes.fromhex("05000100") + bytes.fromhex(f32s(1, 2)), godot=3) == Vector2(
        1, 2
    )


def test_widths_are_kept_for_exact_round_trips() -> None:
    # A 64-bit small int, a 64-bit float that float32 holds, a 32-bit NaN, double-precision math.
    cases = {
        "020001000100000000000000": Int64,
        "03000100000000000000f03f": Float64,
        "030000000000c07f": Float32,
    }
    for hexed, cls in cases.items():
        value = bytes_to_var(bytes.fromhex(hexed))
        assert type(value) is cls
        assert var_to_bytes(value).hex() == hexed
    assert bytes_to_var(bytes.fromhex("020001000100000000000000")) == 1
    wide = bytes_to_var(bytes.fromhex("05000100" + f64s(1, 2)))
    assert wide == Vector2(1, 2) and is_real64(wide) and not is_real64(Vector2(1, 2))
    assert var_to_bytes(wide).hex() == "05000100" + f64s(1, 2)
    packed = bytes_to_var(bytes.fromhex("2300010001000000" + f64s(1, 2)))
    assert packed == PackedVector2Array([Vector2(1, 2)]) and is_real64(packed)
    assert var_to_bytes(packed).hex() == "2300010001000000" + f64s(1, 2)
    t2d = real64(Transform2D(Vector2(1, 2), Vector2(3, 4), Vector2(5, 6)))
    assert bytes_to_var(var_to_bytes(t2d)) == t2d
    assert var_to_bytes(t2d).hex() == "0b000100" + f64s(1, 2, 3, 4, 5, 6)


def test_float32_fields_follow_godots_single_precision_build() -> None:
    # Out of float32 range -> inf (C's conversion; struct alone would raise).
    assert var_to_bytes(Vector2(1e39, 0)).hex() == "050000000000807f00000000"
    assert var_to_bytes(Vector2(math.nan, math.inf)).hex() == "050000000000c07f0000807f"
    assert var_to_bytes(Color(math.nan, 0, 0, 1)).hex().startswith("140000000000c07f")
    assert var_to_bytes(array("f", [math.nan])).hex().endswith("0000c07f")
    assert var_to_bytes(array("d", [math.nan])).hex().endswith("000000000000f87f")
    # COLOR ignores FLAG_64 on read (always float32).
    assert bytes_to_var(bytes.fromhex("14000100" + f32s(1, 0, 0, 1))) == Color(1, 0, 0, 1)


def test_value_classes_are_distinct_immutable_and_hashable() -> None:
    assert Vector2(1, 2) != Vector2i(1, 2)
    assert Vector2(1, 2) != (1, 2)
    assert Vector2(1, 2) == real64(Vector2(1, 2))
    assert hash(Vector2(1, 2)) == hash(real64(Vector2(1, 2)))
    assert len({Vector2(1, 2), Vector2i(1, 2), Vector3(1, 2, 0)}) == 3
    with pytest.raises(AttributeError):
        Vector2(1, 2).x = 3  # type: ignore[misc]
    assert TypedArray(ContainerType.of(2), [1]) != TypedArray(ContainerType.of(3), [1])
    assert PackedVector2Array() != PackedVector3Array()
    assert repr(StringName("a")) == "StringName('a')"
    assert str(NodePath.parse("/root/a:b:c")) == "/root/a:b:c"
    assert NodePath.parse("/root/a:b:c") == NodePath(("root", "a"), ("b", "c"), True)


def test_lenient_decoding_matches_godot() -> None:
    cases = {
        "0200000005000000deadbeef": 5,  # trailing bytes ignored
        "02ff000005000000": 5,  # bits 8-15 ignored
        "020000ff05000000": 5,
        "0200020005000000": 5,  # bit 17 means nothing for INT
        "0100000002000000": True,
        "040000000300000061006200": "a",  # stops at NUL
        "0400000004000000efbbbf61": "a",  # BOM dropped
        "22000000010000000200000061620000": PackedStringArray(["ab"]),  # no NUL
        "22000000ffffffff": PackedStringArray(),  # negative count
        "1d00000003000000010203": b"\x01\x02\x03",  # padding missing
        "1c000000010000800200000007000000": [7],  # shared bit
        "1b0000000100008002000000010000000200000002000000": {1: 2},
        "1b000000020000000200000001000000020000000200000002000000010000000200000003000000": {1: 3},
        "1900000012345678": Callable(),
        "180001000000000000000000": ObjectID(0),
        "1600000001000080000000000200000001000000610000000100000070000000": NodePath.parse("a:p"),
        "1c0001001800000000000000": TypedArray(ContainerType.of(VariantType.OBJECT), []),
    }
    for hexed, expected in cases.items():
        assert same(bytes_to_var(bytes.fromhex(hexed)), expected), hexed
    # Typed-container elements are kept as sent (Godot drops/converts mismatches).
    data = bytes.fromhex("1c00010002000000" + "01000000" + "04000000" + gstr("a"))
    assert bytes_to_var(data) == TypedArray(ContainerType.of(VariantType.INT), ["a"])
    # A full object with an empty class name is Godot's null Object.
    assert bytes_to_var(bytes.fromhex("1800000000000000"), allow_objects=True) is None


@pytest.mark.parametrize(
    "hexed",
    [
        "",
        "020000",
        "02000000",
        "0200000001",
        "0200ff0005000000",  # bit 16 from garbage: needs 8 bytes
        "27000000",
        "ff000000",
        "040000000100000061",  # padding must be present
        "0400000002000000c3280000",  # invalid UTF-8
        "040000000100000080000000",
        "0400000002000000c0800000",  # overlong
        "0400000003000000eda08000",  # surrogate
        "160000000100000061000000",  # old NodePath format
        "180000000000000000000000",  # full object, not allowed
        "1c0001006300000000000000",  # container type 99
        "1e000000ffffffff",
        "1e0000000200000001000000",
        "1c00000002000000",
        "1b0000000100000002000000",
        "1a00000000000000000000",  # truncated Signal id
        "1d00000004000000010203",
        "1c000000010000001c000000010000001c00000001000000",
    ],
)
def test_bad_input_raises_the_documented_error_with_an_offset(hexed: str) -> None:
    data = bytes.fromhex(hexed)
    with pytest.raises(VariantDecodeError) as info:
        bytes_to_var(data)
    assert 0 <= info.value.offset <= len(data)
    assert isinstance(info.value, errors.InvalidArgumentError)
    assert isinstance(info.value, ValueError)
    assert errors.VariantDecodeError is VariantDecodeError
    again = pickle.loads(pickle.dumps(info.value))  # e.g. across multiprocessing
    assert (str(again), again.offset) == (str(info.value), info.value.offset)


def test_objects_refused_unless_allowed_then_inert() -> None:
    data = var_to_bytes(
        EncodedObject("OS", {"script": "res://evil.gd", "x": [1, {"y": 2}]}), full_objects=True
    )
    with pytest.raises(VariantDecodeError, match="allow_objects"):
        bytes_to_var(data)
    with pytest.raises(VariantDecodeError, match="allow_objects"):
        bytes_to_var(var_to_bytes([1, EncodedObject("Node", {})], full_objects=True))
    obj = bytes_to_var(data, allow_objects=True)
    assert type(obj) is EncodedObject
    assert obj.class_name == "OS" and obj.properties == {
        "script": "res://evil.gd",
        "x": [1, {"y": 2}],
    }
    # An object id is harmless and allowed either way (Godot: EncodedObjectAsID).
    assert bytes_to_var(bytes.fromhex("180001000500000000000000")) == ObjectID(5)


def test_unhashable_dictionary_keys_are_a_decode_error() -> None:
    # Godot allows Array keys; Python dicts cannot hold them.
    data = bytes.fromhex("1b000000010000001c0000000000000000000000")
    with pytest.raises(VariantDecodeError, match="unhashable") as info:
        bytes_to_var(data)
    assert info.value.offset == 8


def test_encoder_refuses_what_godot_cannot_carry() -> None:
    for value, exc in [
        ((1, 2), errors.ArgumentTypeError),
        ({1, 2}, errors.ArgumentTypeError),
        (object(), errors.ArgumentTypeError),
        (array("h", [1]), errors.ArgumentTypeError),
        (2**64, errors.InvalidArgumentError),
        (Vector2i(2**31, 0), errors.InvalidArgumentError),
        ("a\0b", errors.InvalidArgumentError),
        ("\ud800", errors.InvalidArgumentError),
        (PackedStringArray([1]), errors.ArgumentTypeError),
        (TypedArray(ContainerType(1, 99), []), errors.InvalidArgumentError),
    ]:
        with pytest.raises(exc):
            var_to_bytes(value)
    with pytest.raises(errors.InvalidArgumentError):
        var_to_bytes(1, godot=5)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(errors.InvalidArgumentError, match="deeper"):
        var_to_bytes(cycle)


def test_subclasses_encode_as_their_godot_base() -> None:
    import enum

    class Kind(enum.IntEnum):
        A = 3

    assert var_to_bytes(Kind.A) == var_to_bytes(3)
    assert var_to_bytes(bytearray(b"ab")) == var_to_bytes(memoryview(b"ab")) == var_to_bytes(b"ab")


def nested_arrays(depth: int) -> bytes:
    return bytes.fromhex("1c00000001000000") * depth + bytes.fromhex("00000000")


def test_depth_limit() -> None:
    assert bytes_to_var(nested_arrays(256)) is not None
    with pytest.raises(VariantDecodeError, match="max_depth"):
        bytes_to_var(nested_arrays(257))
    assert bytes_to_var(nested_arrays(10), max_depth=10) is not None
    with pytest.raises(VariantDecodeError):
        bytes_to_var(nested_arrays(11), max_depth=10)
    # A caller raising max_depth past Python's recursion limit still gets the documented error.
    with pytest.raises(VariantDecodeError):
        bytes_to_var(nested_arrays(5000), max_depth=10_000)
    deep: list[Any] = []
    for _ in range(256):
        deep = [deep]
    with pytest.raises(errors.InvalidArgumentError):
        var_to_bytes(deep)
    assert bytes_to_var(var_to_bytes(deep, max_depth=300), max_depth=300) == deep


def test_huge_lengths_fail_before_allocating() -> None:
    for type_hex in (
        "04",
        "15",
        "1c",
        "1b",
        "1d",
        "1e",
        "1f",
        "20",
        "21",
        "22",
        "23",
        "24",
        "25",
        "26",
    ):
        data = bytes.fromhex(type_hex + "000000ffffff7f") + b"\0" * 64
        start = time.perf_counter()
        with pytest.raises(VariantDecodeError):
            bytes_to_var(data)
        assert time.perf_counter() - start < 1.0  # would be minutes if it looped or allocated
    # NodePath part counts and Object property counts too.
    with pytest.raises(VariantDecodeError):
        bytes_to_var(bytes.fromhex("16000000ffffffffffffff7f00000000"))
    with pytest.raises(VariantDecodeError):
        bytes_to_var(bytes.fromhex("18000000" + gstr("Node") + "ffffff7f"), allow_objects=True)


def test_element_budget() -> None:
    # 100 000 NILs in 400 kB: fine by default, refused under a smaller budget.
    data = bytes.fromhex("1c000000") + struct.pack("<I", 100_000) + b"\0" * 400_000
    assert len(bytes_to_var(data)) == 100_000
    with pytest.raises(VariantDecodeError, match="budget"):
        bytes_to_var(data, max_elements=50_000)
    # The budget spans the whole call: many small arrays add up.
    small = (
        bytes.fromhex("1c000000") + struct.pack("<I", 10) + bytes.fromhex("1c00000000000000") * 10
    )
    with pytest.raises(VariantDecodeError, match="budget"):
        bytes_to_var(small, max_elements=5)
    packed = bytes.fromhex("2300000010000000") + b"\0" * 128
    with pytest.raises(VariantDecodeError, match="budget"):
        bytes_to_var(packed, max_elements=15)


def test_decode_var_reports_the_end_and_accepts_views() -> None:
    blob = var_to_bytes("ab") + var_to_bytes([1, 2]) + var_to_bytes(b"\x01")
    value, end = decode_var(blob)
    assert (value, end) == ("ab", 12)
    value, end = decode_var(memoryview(blob), end)
    assert value == [1, 2]
    value, end = decode_var(bytearray(blob), end)
    assert (value, end) == (b"\x01", len(blob))
    with pytest.raises(errors.InvalidArgumentError):
        decode_var(blob, len(blob) + 1)
    with pytest.raises(errors.ArgumentTypeError):
        bytes_to_var("not bytes")  # type: ignore[arg-type]


def sample_values() -> list[Any]:
    values = [v for v, _ in GODOT4]
    values += [
        {
            "id": 7,
            "pos": Vector2(1.5, -2),
            "hp": 0.75,
            "alive": True,
            "name": "bob",
            "tags": PackedStringArray(["a", "b"]),
            "inv": array("i", [1, 2, 3]),
            StringName("k"): [None, {1: 2.5}, NodePath.parse("/a/b:c")],
        },
        TypedDictionary(
            ContainerType.of(VariantType.INT),
            ContainerType.of(VariantType.VECTOR3),
            {1: Vector3(1, 2, 3), 2: Vector3()},
        ),
        real64(Projection()),
        [
            real64(AABB(Vector3(0.1, 0.2, 0.3), Vector3(1, 1, 1))),
            Int64(3),
            Float64(0.5),
            Float32(math.nan),
        ],
    ]
    return values


def test_round_trip_python_values() -> None:
    for value in sample_values():
        data = var_to_bytes(value)
        assert len(data) % 4 == 0
        assert same(bytes_to_var(data), value), value
    for value, _ in GODOT3:
        assert same(bytes_to_var(var_to_bytes(value, godot=3), godot=3), value)


def test_fuzzed_mutations_raise_only_the_documented_error() -> None:
    """Bounded, seeded mutation fuzz: every outcome is a value or a
    VariantDecodeError; a value must re-encode (or be refused by the encoder
    with one of its documented errors) and never take long."""
    rng = random.Random(20261203)
    corpus = [var_to_bytes(v) for v in sample_values()]
    corpus += [var_to_bytes(v, full_objects=True) for v, _ in GODOT4_FULL]
    corpus3 = [var_to_bytes(v, godot=3) for v, _ in GODOT3]
    counts = {"ok": 0, "error": 0}
    deadline = time.monotonic() + 20
    for i in range(20_000):
        if time.monotonic() > deadline:
            break
        godot = 3 if i % 4 == 3 else 4
        data = bytearray(rng.choice(corpus3 if godot == 3 else corpus))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(5)
            if op == 0 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif op == 1 and data:
                del data[rng.randrange(len(data)) :]
            elif op == 2:
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.randbytes(rng.choice((1, 4, 8)))
            elif op == 3 and len(data) >= 8:
                at = rng.randrange(0, len(data) - 3)
                data[at : at + 4] = struct.pack(
                    "<I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x10000, 255))
                )
            else:
                data += rng.choice(corpus)[: rng.randrange(16)]
        try:
            value = bytes_to_var(
                bytes(data), allow_objects=bool(i & 1), godot=godot, max_elements=10_000
            )
        except VariantDecodeError as exc:
            assert 0 <= exc.offset <= len(data)
            counts["error"] += 1
            continue
        counts["ok"] += 1
        try:
            again = var_to_bytes(value, full_objects=True, godot=godot)
        except (errors.ArgumentTypeError, errors.InvalidArgumentError):
            continue  # e.g. a decoded NUL-free but re-encodable-only-in-4.x value
        assert same(bytes_to_var(again, allow_objects=True, godot=godot), value)
    assert counts["ok"] > 100 and counts["error"] > 100, counts


@pytest.mark.parametrize(
    ("shape", "item", "count"),
    [
        ("23000000", b"\0" * 8, 50_000),  # PackedVector2Array: a Vector2 per 8 bytes
        ("25000000", b"\0" * 16, 25_000),  # PackedColorArray
        ("1c000000", bytes.fromhex("1c00000000000000"), 50_000),  # Array of empty Arrays
        ("1c000000", bytes.fromhex("1b00000000000000"), 50_000),  # Array of empty Dictionaries
        ("1c000000", bytes.fromhex("11000000") + b"\0" * 36, 10_000),  # Array of Basis
        ("1c000000", bytes.fromhex("050000000000803f00000040"), 30_000),  # Array of Vector2
    ],
)
def test_decoded_memory_stays_a_small_multiple_of_the_input(
    shape: str, item: bytes, count: int
) -> None:
    import tracemalloc

    data = bytes.fromhex(shape) + struct.pack("<I", count) + item * count
    tracemalloc.start()
    try:
        value = bytes_to_var(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(value) == count
    assert peak < 20 * len(data), (peak, len(data))  # measured: 8x-16x


def test_key_caches_stay_correct_after_they_fill() -> None:
    # Both directions cache Dictionary keys (bounded at 4096); more distinct
    # keys than that, twice over, must still encode and decode exactly.
    for _ in range(2):
        value = {f"key{i}": i for i in range(5000)}
        value["héllo"] = "x"
        data = var_to_bytes(value)
        assert bytes_to_var(data) == value
        assert var_to_bytes(bytes_to_var(data)) == data
    # A key that fails validation is never cached as valid.
    bad = bytes.fromhex("1b000000010000000400000002000000c32800000200000001000000")
    for _ in range(2):
        with pytest.raises(VariantDecodeError, match="UTF-8"):
            bytes_to_var(bad)


def test_concurrent_calls_keep_their_own_settings() -> None:
    # Settings travel with each call (the first version kept them on a stack
    # shared by every thread): one thread's full_objects never leaks into another's.
    import threading

    node_array = TypedArray(ContainerType.of_class("Node"), [])
    plain = var_to_bytes(node_array)
    full = var_to_bytes(node_array, full_objects=True)
    assert plain != full
    failures: list[str] = []

    def encode(full_objects: bool, expected: bytes) -> None:
        for _ in range(300):
            if var_to_bytes([node_array] * 20, full_objects=full_objects) != expected:
                failures.append(f"full_objects={full_objects}")
                return

    threads = [
        threading.Thread(target=encode, args=(False, var_to_bytes([node_array] * 20))),
        threading.Thread(
            target=encode, args=(True, var_to_bytes([node_array] * 20, full_objects=True))
        ),
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures

"""Godot's Variant binary serialization (``var_to_bytes`` / ``bytes_to_var``).

Byte-compatible with Godot 4.x (``godot=4``, the default) and 3.x
(``godot=3``: other type ids, no typed containers, no 64-bit math types).
Independent of every peer class: ``PacketPeer.put_var``/``get_var`` and the
ENet work call it.

Python mapping (see the README "Variant" section for the full table):
``None``, ``bool``, ``int``, ``float``, ``str``, ``dict``, ``list`` and
``bytes`` (PackedByteArray) natively; immutable value classes for the math
types; ``array.array`` for PackedInt32/Int64/Float32/Float64Array (type codes
``'i'``, ``'q'``, ``'f'``, ``'d'``); list subclasses for the other Packed
arrays and for typed Arrays; a dict subclass for typed Dictionaries.

Round trips are exact both ways: ``bytes_to_var(var_to_bytes(x)) == x`` and
``var_to_bytes(bytes_to_var(b)) == b`` for what Godot produces. Where Godot's
encoder would choose another width than the bytes carry (a 64-bit int that
fits 32 bits, a 64-bit float float32 holds exactly, a 32-bit NaN, math types
from a double-precision build) the decoder returns the marker types
:class:`Int64`, :class:`Float64`, :class:`Float32` or a :func:`real64` value,
which compare equal to the plain value and make the encoder keep the width.

Untrusted input: every length is checked against what remains, nesting is
limited (``max_depth``), the number of decoded container elements is limited
(``max_elements``) and no allocation exceeds a small multiple of the input
size. Every failure raises :class:`VariantDecodeError` (an
``InvalidArgumentError``, so a ``ValueError``) with the byte ``offset``.
Objects are refused unless ``allow_objects=True`` and even then decode to an
inert :class:`EncodedObject` record: no sender-chosen class is ever created.
"""

from __future__ import annotations

import enum
import math
import struct
import sys
from array import array
from typing import Any, NamedTuple, Optional, Union
from typing import Callable as _Fn

from .errors import ArgumentTypeError, InvalidArgumentError, VariantDecodeError

__all__ = [
    "AABB",
    "RID",
    "Basis",
    "Callable",
    "Color",
    "ContainerType",
    "EncodedObject",
    "Float32",
    "Float64",
    "Int64",
    "NodePath",
    "ObjectID",
    "PackedColorArray",
    "PackedStringArray",
    "PackedVector2Array",
    "PackedVector3Array",
    "PackedVector4Array",
    "Plane",
    "Projection",
    "Quaternion",
    "Rect2",
    "Rect2i",
    "Signal",
    "StringName",
    "Transform2D",
    "Transform3D",
    "TypedArray",
    "TypedDictionary",
    "VariantDecodeError",
    "VariantType",
    "Vector2",
    "Vector2i",
    "Vector3",
    "Vector3i",
    "Vector4",
    "Vector4i",
    "bytes2var",
    "bytes_to_var",
    "decode_var",
    "is_real64",
    "real64",
    "var2bytes",
    "var_to_bytes",
]

DEFAULT_MAX_DEPTH = 256
"""Nesting accepted by default. Godot allows 1024; Python's recursion limit
(1000 frames) makes 256 our default. ``max_depth`` may raise it up to the
interpreter's limit (a RecursionError becomes a VariantDecodeError)."""

DEFAULT_MAX_ELEMENTS = 1 << 20
"""Container elements (Array items, Dictionary entries, Object properties,
Packed vector/color/string items) decoded per call by default."""


# ---------------------------------------------------------------------------
# Value classes
# ---------------------------------------------------------------------------


class VariantType(enum.IntEnum):
    """Godot 4 ``Variant.Type`` ids (the ids on the 4.x wire)."""

    NIL = 0
    BOOL = 1
    INT = 2
    FLOAT = 3
    STRING = 4
    VECTOR2 = 5
    VECTOR2I = 6
    RECT2 = 7
    RECT2I = 8
    VECTOR3 = 9
    VECTOR3I = 10
    TRANSFORM2D = 11
    VECTOR4 = 12
    VECTOR4I = 13
    PLANE = 14
    QUATERNION = 15
    AABB = 16
    BASIS = 17
    TRANSFORM3D = 18
    PROJECTION = 19
    COLOR = 20
    STRING_NAME = 21
    NODE_PATH = 22
    RID = 23
    OBJECT = 24
    CALLABLE = 25
    SIGNAL = 26
    DICTIONARY = 27
    ARRAY = 28
    PACKED_BYTE_ARRAY = 29
    PACKED_INT32_ARRAY = 30
    PACKED_INT64_ARRAY = 31
    PACKED_FLOAT32_ARRAY = 32
    PACKED_FLOAT64_ARRAY = 33
    PACKED_STRING_ARRAY = 34
    PACKED_VECTOR2_ARRAY = 35
    PACKED_VECTOR3_ARRAY = 36
    PACKED_COLOR_ARRAY = 37
    PACKED_VECTOR4_ARRAY = 38


class Int64(int):
    """An int carried as 64 bits although it fits in 32 (Godot itself writes
    64 bits only for values outside the int32 range). Equal to the plain int."""

    __slots__ = ()


class Float64(float):
    """A float carried as 64 bits although float32 holds it exactly (Godot
    writes 64 bits only when float32 would change the value). Equal to the
    plain float."""

    __slots__ = ()


class Float32(float):
    """A float carried as 32 bits where Godot would write 64 (only NaN: Godot
    writes every NaN FLOAT as 64 bits). Equal to the plain float."""

    __slots__ = ()


class StringName(str):
    """Godot ``StringName`` (``&"name"``). A ``str`` subclass: compares equal to
    the same ``str``; encodes as STRING_NAME instead of STRING."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"StringName({str.__repr__(self)})"


class Vector2(NamedTuple):
    """Godot ``Vector2`` (real components)."""

    x: float = 0.0
    y: float = 0.0


class Vector2i(NamedTuple):
    """Godot ``Vector2i`` (int32 components)."""

    x: int = 0
    y: int = 0


class Rect2(NamedTuple):
    """Godot ``Rect2``: ``position`` and ``size``."""

    position: Vector2 = Vector2()
    size: Vector2 = Vector2()


class Rect2i(NamedTuple):
    """Godot ``Rect2i``: ``position`` and ``size``."""

    position: Vector2i = Vector2i()
    size: Vector2i = Vector2i()


class Vector3(NamedTuple):
    """Godot ``Vector3`` (real components)."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


class Vector3i(NamedTuple):
    """Godot ``Vector3i`` (int32 components)."""

    x: int = 0
    y: int = 0
    z: int = 0


class Transform2D(NamedTuple):
    """Godot ``Transform2D``: the ``x`` and ``y`` axes (columns) and ``origin``."""

    x: Vector2 = Vector2(1.0, 0.0)
    y: Vector2 = Vector2(0.0, 1.0)
    origin: Vector2 = Vector2()


class Vector4(NamedTuple):
    """Godot ``Vector4`` (real components)."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 0.0


class Vector4i(NamedTuple):
    """Godot ``Vector4i`` (int32 components)."""

    x: int = 0
    y: int = 0
    z: int = 0
    w: int = 0


class Plane(NamedTuple):
    """Godot ``Plane``: ``normal`` and distance ``d``."""

    normal: Vector3 = Vector3()
    d: float = 0.0


class Quaternion(NamedTuple):
    """Godot ``Quaternion`` (x, y, z, w)."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    w: float = 1.0


class AABB(NamedTuple):
    """Godot ``AABB``: ``position`` and ``size``."""

    position: Vector3 = Vector3()
    size: Vector3 = Vector3()


class Basis(NamedTuple):
    """Godot ``Basis`` given by its axes (columns) ``x``, ``y``, ``z``, as
    Godot's constructor takes them. On the wire it is row by row (x.x, y.x,
    z.x, x.y, ...), which Godot's documentation gets wrong."""

    x: Vector3 = Vector3(1.0, 0.0, 0.0)
    y: Vector3 = Vector3(0.0, 1.0, 0.0)
    z: Vector3 = Vector3(0.0, 0.0, 1.0)


class Transform3D(NamedTuple):
    """Godot ``Transform3D`` (``Transform`` in 3.x): ``basis`` and ``origin``."""

    basis: Basis = Basis()
    origin: Vector3 = Vector3()


class Projection(NamedTuple):
    """Godot ``Projection``: four ``Vector4`` columns."""

    x: Vector4 = Vector4(1.0, 0.0, 0.0, 0.0)
    y: Vector4 = Vector4(0.0, 1.0, 0.0, 0.0)
    z: Vector4 = Vector4(0.0, 0.0, 1.0, 0.0)
    w: Vector4 = Vector4(0.0, 0.0, 0.0, 1.0)


class Color(NamedTuple):
    """Godot ``Color`` (always four float32 on the wire)."""

    r: float = 0.0
    g: float = 0.0
    b: float = 0.0
    a: float = 1.0


class NodePath(NamedTuple):
    """Godot ``NodePath``: ``names`` (the ``/`` parts), ``subnames`` (the ``:``
    parts) and ``absolute``. ``NodePath.parse("/root/a:b")`` builds one from
    Godot's text form; ``str()`` gives it back."""

    names: tuple[str, ...] = ()
    subnames: tuple[str, ...] = ()
    absolute: bool = False

    @classmethod
    def parse(cls, text: str) -> NodePath:
        """Build from Godot's text form (``"a/b:c"``, ``"/root/x"``, ``":prop"``)."""
        absolute = text.startswith("/")
        path, *subnames = text.lstrip("/").split(":") if text else [""]
        names = tuple(p for p in path.split("/") if p)
        return cls(names, tuple(subnames), absolute)

    def __str__(self) -> str:
        text = ("/" if self.absolute else "") + "/".join(self.names)
        return text + "".join(":" + s for s in self.subnames)


class RID(NamedTuple):
    """Godot ``RID``: an opaque 64-bit id (always 0 in 3.x, which sends none)."""

    id: int = 0


class ObjectID(NamedTuple):
    """An Object sent as its instance id (Godot's default, ``full_objects`` off;
    Godot decodes it to ``EncodedObjectAsID``). Id 0 is Godot's null Object."""

    id: int = 0


class EncodedObject(NamedTuple):
    """An Object sent whole (``full_objects=True``): its class name and stored
    properties, decoded only with ``allow_objects=True`` and then kept inert
    (Godot instantiates the class and sets the properties; we never create
    anything the sender names)."""

    class_name: str
    properties: dict[str, Any]


class Callable(NamedTuple):
    """Godot ``Callable``: Godot encodes no payload, so every Callable is the
    empty one on the wire."""


class Signal(NamedTuple):
    """Godot ``Signal``: the signal ``name`` and the object's instance id."""

    name: str = ""
    object_id: int = 0


_VALUE_CLASSES: tuple[type, ...] = (
    Vector2, Vector2i, Rect2, Rect2i, Vector3, Vector3i, Transform2D, Vector4, Vector4i,
    Plane, Quaternion, AABB, Basis, Transform3D, Projection, Color, NodePath, RID,
    ObjectID, EncodedObject, Callable, Signal,
)  # fmt: skip


def _family(cls: type) -> type:
    return getattr(cls, "_variant_family", cls)


def _tuple_eq(self: tuple[Any, ...], other: object) -> bool:
    # A Vector2 is not a Vector2i nor a plain tuple (NamedTuple would say so).
    return (
        isinstance(other, tuple)
        and _family(type(other)) is _family(type(self))
        and tuple.__eq__(self, other)
    )


def _tuple_ne(self: tuple[Any, ...], other: object) -> bool:
    return not _tuple_eq(self, other)


def _tuple_hash(self: tuple[Any, ...]) -> int:
    return hash((_family(type(self)).__name__, tuple(self)))


for _cls in _VALUE_CLASSES:
    _cls.__eq__ = _tuple_eq  # type: ignore[assignment]
    _cls.__ne__ = _tuple_ne  # type: ignore[assignment]
    _cls.__hash__ = _tuple_hash  # type: ignore[assignment]


def _not_equal(self: Any, other: object) -> bool:
    return not self.__eq__(other)


class ContainerType(NamedTuple):
    """The element (or key/value) type of a typed Array/Dictionary (Godot 4.3+).

    ``kind`` 1: a builtin ``type_id`` (:class:`VariantType`); 2: a native class
    ``name``; 3: a script path ``name`` (``res://...``). Godot writes kinds 2
    and 3 only with ``full_objects``, otherwise the class ``EncodedObjectAsID``;
    so does :func:`var_to_bytes`."""

    kind: int
    type_id: int = 0
    name: str = ""

    @classmethod
    def of(cls, type_id: int) -> ContainerType:
        """A builtin element type, e.g. ``ContainerType.of(VariantType.INT)``."""
        return cls(1, int(type_id))

    @classmethod
    def of_class(cls, name: str) -> ContainerType:
        """Objects of a native class, e.g. ``ContainerType.of_class("Node")``."""
        return cls(2, 0, name)

    @classmethod
    def of_script(cls, path: str) -> ContainerType:
        """Objects with a script, e.g. ``ContainerType.of_script("res://a.gd")``."""
        return cls(3, 0, path)


class TypedArray(list):  # type: ignore[type-arg]
    """A typed Godot Array (``Array[int]`` ...): a list plus ``element_type``.

    Equal to another TypedArray with the same type and items (and, as a list,
    to a plain list of the same items). Elements are kept as sent: Godot
    drops or converts the ones that do not match the type, we do not."""

    __slots__ = ("element_type",)

    def __init__(self, element_type: ContainerType, items: Any = ()) -> None:
        super().__init__(items)
        self.element_type = element_type

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedArray) and other.element_type != self.element_type:
            return False
        return list.__eq__(self, other)

    __ne__ = _not_equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"TypedArray({self.element_type!r}, {list.__repr__(self)})"


class TypedDictionary(dict):  # type: ignore[type-arg]
    """A typed Godot Dictionary (``Dictionary[String, int]`` ...): a dict plus
    ``key_type`` and ``value_type`` (``None`` = untyped, Godot's ``Variant``).
    Entries are kept as sent (Godot drops those that do not match)."""

    __slots__ = ("key_type", "value_type")

    def __init__(
        self,
        key_type: Optional[ContainerType],
        value_type: Optional[ContainerType],
        items: Any = (),
    ) -> None:
        super().__init__(items)
        self.key_type = key_type
        self.value_type = value_type

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TypedDictionary) and (
            other.key_type != self.key_type or other.value_type != self.value_type
        ):
            return False
        return dict.__eq__(self, other)

    __ne__ = _not_equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"TypedDictionary({self.key_type!r}, {self.value_type!r}, {dict.__repr__(self)})"


class _PackedList(list):  # type: ignore[type-arg]
    """A Godot Packed array held as a list; equal only to the same kind."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _PackedList) and _family(type(other)) is not _family(type(self)):
            return False
        return list.__eq__(self, other)

    __ne__ = _not_equal

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list.__repr__(self)})"


class PackedStringArray(_PackedList):
    """Godot ``PackedStringArray`` (``PoolStringArray`` in 3.x): a list of str."""

    __slots__ = ()


class PackedVector2Array(_PackedList):
    """Godot ``PackedVector2Array``: a list of :class:`Vector2`."""

    __slots__ = ()


class PackedVector3Array(_PackedList):
    """Godot ``PackedVector3Array``: a list of :class:`Vector3`."""

    __slots__ = ()


class PackedVector4Array(_PackedList):
    """Godot ``PackedVector4Array`` (4.3+): a list of :class:`Vector4`."""

    __slots__ = ()


class PackedColorArray(_PackedList):
    """Godot ``PackedColorArray``: a list of :class:`Color`."""

    __slots__ = ()


# Types whose reals Godot writes as doubles in a double-precision build
# (REAL_T_IS_DOUBLE). Each gets a hidden subclass that means "64-bit reals".
_REAL_CLASSES: tuple[type, ...] = (
    Vector2, Rect2, Vector3, Transform2D, Vector4, Plane, Quaternion, AABB, Basis,
    Transform3D, Projection, PackedVector2Array, PackedVector3Array, PackedVector4Array,
)  # fmt: skip
_WIDE: dict[type, type] = {}
for _cls in _REAL_CLASSES:
    _wide = type(_cls.__name__, (_cls,), {"__slots__": (), "__doc__": _cls.__doc__})
    _wide._variant_family = _cls  # type: ignore[attr-defined]
    _wide.__qualname__ = _cls.__qualname__
    _WIDE[_cls] = _wide
_NARROW = {wide: cls for cls, wide in _WIDE.items()}

_Real = Any


def real64(value: _Real) -> Any:
    """The same math value marked "64-bit reals" (what a double-precision Godot
    build sends): Vector2/3/4, Rect2, Transform2D/3D, Plane, Quaternion, AABB,
    Basis, Projection, PackedVector2/3/4Array. Equal to ``value``."""
    wide = _WIDE.get(type(value))
    if wide is None:
        if type(value) in _NARROW:
            return value
        raise ArgumentTypeError(f"{type(value).__name__} has no 64-bit form")
    if isinstance(value, list):
        return wide(value)
    return wide(*value)


def is_real64(value: object) -> bool:
    """Whether ``value`` is a math value marked with 64-bit reals."""
    return type(value) in _NARROW


# ---------------------------------------------------------------------------
# Wire constants
# ---------------------------------------------------------------------------

_FLAG_64 = 1 << 16
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_BIG = sys.byteorder == "big"
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_U64 = struct.Struct("<Q")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_HDR_I32 = struct.Struct("<Ii")
_HDR_I64 = struct.Struct("<Iq")
_HDR_F32 = struct.Struct("<If")
_HDR_F64 = struct.Struct("<Id")
_HDR_U32 = struct.Struct("<II")
_HDR_U64 = struct.Struct("<IQ")
_U32x2 = struct.Struct("<II")
_U32x3 = struct.Struct("<III")

_F32N = {n: struct.Struct(f"<{n}f") for n in (2, 3, 4, 6, 9, 12, 16)}
_F64N = {n: struct.Struct(f"<{n}d") for n in (2, 3, 4, 6, 9, 12, 16)}
_I32N = {n: struct.Struct(f"<{n}i") for n in (2, 3, 4)}

_KEY_CACHE_SIZE = 4096
_ARRAY_CODES = {"i": 4, "q": 8, "f": 4, "d": 8}


# Flatten / rebuild each real-based math type in wire order.
def _flat_rect2(v: Rect2) -> tuple[float, ...]:
    return (*v.position, *v.size)


def _flat_t2d(v: Transform2D) -> tuple[float, ...]:
    return (*v.x, *v.y, *v.origin)


def _flat_plane(v: Plane) -> tuple[float, ...]:
    return (*v.normal, v.d)


def _flat_aabb(v: AABB) -> tuple[float, ...]:
    return (*v.position, *v.size)


def _flat_basis(b: Basis) -> tuple[float, ...]:
    x, y, z = b
    return (x[0], y[0], z[0], x[1], y[1], z[1], x[2], y[2], z[2])


def _flat_t3d(v: Transform3D) -> tuple[float, ...]:
    return (*_flat_basis(v.basis), *v.origin)


def _flat_projection(v: Projection) -> tuple[float, ...]:
    return (*v.x, *v.y, *v.z, *v.w)


def _make_basis(cls: type, f: tuple[float, ...]) -> Any:
    return cls(Vector3(f[0], f[3], f[6]), Vector3(f[1], f[4], f[7]), Vector3(f[2], f[5], f[8]))


_REAL_LAYOUT: dict[type, tuple[int, _Fn[[Any], tuple[float, ...]], _Fn[[type, Any], Any]]] = {
    Vector2: (2, tuple, tuple.__new__),
    Vector3: (3, tuple, tuple.__new__),
    Vector4: (4, tuple, tuple.__new__),
    Quaternion: (4, tuple, tuple.__new__),
    Rect2: (4, _flat_rect2, lambda c, f: c(Vector2(f[0], f[1]), Vector2(f[2], f[3]))),
    Transform2D: (
        6,
        _flat_t2d,
        lambda c, f: c(Vector2(f[0], f[1]), Vector2(f[2], f[3]), Vector2(f[4], f[5])),
    ),
    Plane: (4, _flat_plane, lambda c, f: c(Vector3(f[0], f[1], f[2]), f[3])),
    AABB: (6, _flat_aabb, lambda c, f: c(Vector3(f[0], f[1], f[2]), Vector3(f[3], f[4], f[5]))),
    Basis: (9, _flat_basis, _make_basis),
    Transform3D: (
        12,
        _flat_t3d,
        lambda c, f: c(_make_basis(Basis, f), Vector3(f[9], f[10], f[11])),
    ),
    Projection: (
        16,
        _flat_projection,
        lambda c, f: c(Vector4(*f[0:4]), Vector4(*f[4:8]), Vector4(*f[8:12]), Vector4(*f[12:16])),
    ),
}
_INT_LAYOUT: dict[type, tuple[int, _Fn[[Any], tuple[int, ...]], _Fn[[tuple[int, ...]], Any]]] = {
    Vector2i: (2, tuple, lambda f: Vector2i(*f)),
    Vector3i: (3, tuple, lambda f: Vector3i(*f)),
    Vector4i: (4, tuple, lambda f: Vector4i(*f)),
    Rect2i: (
        4,
        lambda v: (*v.position, *v.size),
        lambda f: Rect2i(Vector2i(f[0], f[1]), Vector2i(f[2], f[3])),
    ),
}


def _pack_f32(packer: struct.Struct, values: tuple[float, ...]) -> bytes:
    """float32 as Godot's single-precision build: out-of-range values become
    +-inf (C's conversion) where struct raises OverflowError."""
    try:
        return packer.pack(*values)
    except OverflowError:
        return packer.pack(*(_to_f32_range(v) for v in values))


def _to_f32_range(v: float) -> float:
    try:
        _F32.pack(v)
    except OverflowError:
        return math.copysign(math.inf, v)
    return v


# Type ids of each Godot generation: name -> id.
_IDS4 = {t.name: int(t) for t in VariantType}
_IDS3 = {
    "NIL": 0, "BOOL": 1, "INT": 2, "FLOAT": 3, "STRING": 4, "VECTOR2": 5, "RECT2": 6,
    "VECTOR3": 7, "TRANSFORM2D": 8, "PLANE": 9, "QUATERNION": 10, "AABB": 11, "BASIS": 12,
    "TRANSFORM3D": 13, "COLOR": 14, "NODE_PATH": 15, "RID": 16, "OBJECT": 17,
    "DICTIONARY": 18, "ARRAY": 19, "PACKED_BYTE_ARRAY": 20, "PACKED_INT32_ARRAY": 21,
    "PACKED_FLOAT32_ARRAY": 22, "PACKED_STRING_ARRAY": 23, "PACKED_VECTOR2_ARRAY": 24,
    "PACKED_VECTOR3_ARRAY": 25, "PACKED_COLOR_ARRAY": 26,
}  # fmt: skip
_REAL_TYPE_NAME = {
    Vector2: "VECTOR2", Vector3: "VECTOR3", Vector4: "VECTOR4", Quaternion: "QUATERNION",
    Rect2: "RECT2", Transform2D: "TRANSFORM2D", Plane: "PLANE", AABB: "AABB", Basis: "BASIS",
    Transform3D: "TRANSFORM3D", Projection: "PROJECTION",
}  # fmt: skip
_INT_TYPE_NAME = {
    Vector2i: "VECTOR2I", Vector3i: "VECTOR3I", Vector4i: "VECTOR4I", Rect2i: "RECT2I",
}  # fmt: skip
_PACKED_VEC: dict[type, tuple[str, int, Any]] = {
    PackedVector2Array: ("PACKED_VECTOR2_ARRAY", 2, Vector2),
    PackedVector3Array: ("PACKED_VECTOR3_ARRAY", 3, Vector3),
    PackedVector4Array: ("PACKED_VECTOR4_ARRAY", 4, Vector4),
}
_ARRAY_TYPE_NAME = {
    "i": "PACKED_INT32_ARRAY",
    "q": "PACKED_INT64_ARRAY",
    "f": "PACKED_FLOAT32_ARRAY",
    "d": "PACKED_FLOAT64_ARRAY",
}
_ENCODED_OBJECT_AS_ID = "EncodedObjectAsID"


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    """A Godot String's bytes; refuses what Godot cannot hold."""
    if not isinstance(text, str):
        raise ArgumentTypeError(f"expected str, not {type(text).__name__}")
    if "\0" in text:
        raise InvalidArgumentError("a Godot String cannot contain NUL characters")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"string is not valid Unicode: {exc}") from None


_Encoder = _Fn[[bytearray, Any, int, "_EncodeContext"], None]


class _EncodeContext:
    """Per-call settings of one var_to_bytes call."""

    __slots__ = ("full_objects", "max_depth")

    def __init__(self, full_objects: bool, max_depth: int) -> None:
        self.full_objects = full_objects
        self.max_depth = max_depth


def _build_encoder(godot: int) -> _Fn[[Any, _EncodeContext], bytes]:
    ids = _IDS4 if godot == 4 else _IDS3
    t_int, t_float, t_string = ids["INT"], ids["FLOAT"], ids["STRING"]
    t_dict, t_array = ids["DICTIONARY"], ids["ARRAY"]
    hdr_nil = _U32.pack(ids["NIL"])
    hdr_true = _HDR_U32.pack(ids["BOOL"], 1)
    hdr_false = _HDR_U32.pack(ids["BOOL"], 0)
    hdr_f32 = _U32.pack(t_float)
    hdr_f64 = _U32.pack(t_float | _FLAG_64)
    u32 = _U32.pack
    hdr_i32 = _HDR_I32.pack
    hdr_i64 = _HDR_I64.pack
    f32_pack = _F32.pack
    f32_unpack = _F32.unpack
    f64_pack = _F64.pack
    table: dict[type, _Encoder] = {}

    def need(name: str, what: str) -> int:
        if name not in ids:
            raise ArgumentTypeError(f"{what} does not exist in Godot {godot}")
        return ids[name]

    def enc(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
        fn = table.get(type(v))
        if fn is None:
            fn = fallback(v)
        fn(buf, v, depth, ctx)

    def fallback(v: Any) -> _Encoder:
        # Subclasses (IntEnum, user str/dict/list subclasses...) encode as their base.
        for base in (bool, int, float, StringName, str, bytes, bytearray, memoryview):
            if isinstance(v, base):
                return table[base]
        if isinstance(v, TypedDictionary):
            return table[TypedDictionary]
        if isinstance(v, dict):
            return table[dict]
        if isinstance(v, TypedArray):
            return table[TypedArray]
        if isinstance(v, list) and not isinstance(v, _PackedList):
            return table[list]
        raise ArgumentTypeError(f"{type(v).__name__} has no Godot {godot} Variant encoding")

    def enc_nil(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
        buf += hdr_nil

    def enc_bool(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
        buf += hdr_true if v else hdr_false

    def enc_int(buf: bytearray, v: int, depth: int, ctx: _EncodeContext) -> None:
        if _INT32_MIN <= v <= _INT32_MAX:
            buf += hdr_i32(t_int, v)
        else:
            try:
                buf += hdr_i64(t_int | _FLAG_64, v)
            except struct.error:
                raise InvalidArgumentError(f"int {v} does not fit in 64 bits") from None

    def enc_int64(buf: bytearray, v: int, depth: int, ctx: _EncodeContext) -> None:
        try:
            buf += hdr_i64(t_int | _FLAG_64, v)
        except struct.error:
            raise InvalidArgumentError(f"int {v} does not fit in 64 bits") from None

    def enc_float(buf: bytearray, v: float, depth: int, ctx: _EncodeContext) -> None:
        # Godot: float32 when it holds the value exactly, else 64 bits (NaN always 64).
        try:
            p = f32_pack(v)
            if f32_unpack(p)[0] == v:
                buf += hdr_f32
                buf += p
                return
        except OverflowError:
            pass
        buf += hdr_f64
        buf += f64_pack(v)

    def enc_float64(buf: bytearray, v: float, depth: int, ctx: _EncodeContext) -> None:
        buf += hdr_f64
        buf += f64_pack(v)

    def enc_float32(buf: bytearray, v: float, depth: int, ctx: _EncodeContext) -> None:
        buf += hdr_f32
        buf += _pack_f32(_F32, (v,))

    def put_plain_string(buf: bytearray, v: str) -> None:
        b = _utf8(v)
        n = len(b)
        buf += u32(n)
        buf += b
        buf += _PAD[n & 3]

    def put_string(buf: bytearray, v: str, hdr: int) -> None:
        buf += u32(hdr)
        put_plain_string(buf, v)

    def enc_str(buf: bytearray, v: str, depth: int, ctx: _EncodeContext) -> None:
        put_string(buf, v, t_string)

    def container_header(
        base: int, ctype: Optional[ContainerType], shift: int, ctx: _EncodeContext
    ) -> tuple[int, Optional[ContainerType]]:
        if ctype is None or ctype.kind == 0:
            return base, None
        kind = ctype.kind
        if kind == 1:
            return base | (1 << shift), ctype
        if kind in (2, 3):
            if not ctx.full_objects:
                return base | (2 << shift), ContainerType(2, 0, _ENCODED_OBJECT_AS_ID)
            return base | (kind << shift), ctype
        raise InvalidArgumentError(f"container type kind must be 0-3, not {kind}")

    def put_container_type(buf: bytearray, ctype: Optional[ContainerType]) -> None:
        if ctype is None:
            return
        if ctype.kind == 1:
            if not 0 <= ctype.type_id < len(VariantType):
                raise InvalidArgumentError(f"no Variant type id {ctype.type_id}")
            buf += u32(ctype.type_id)
        else:
            put_plain_string(buf, ctype.name)

    def check_depth(depth: int, ctx: _EncodeContext) -> None:
        if depth > ctx.max_depth:
            raise InvalidArgumentError(f"value nested deeper than {ctx.max_depth} (a cycle?)")

    pack_u32x2 = _HDR_U32.pack
    # Dictionary keys repeat (every entity of a snapshot, every tick): their
    # whole encoding is kept, bounded (the keys are the caller's own values).
    key_cache: dict[str, bytes] = {}

    def string_bytes(v: str) -> bytes:
        b = _utf8(v)
        n = len(b)
        return pack_u32x2(t_string, n) + b + _PAD[n & 3]

    t_vector2 = ids["VECTOR2"]
    hdr_vector2_pack = struct.Struct("<Iff").pack

    def enc_dict(buf: bytearray, v: dict[Any, Any], depth: int, ctx: _EncodeContext) -> None:
        if depth >= ctx.max_depth:
            check_depth(depth + 1, ctx)
        buf += pack_u32x2(t_dict, len(v))
        d = depth + 1
        get = table.get
        for key, val in v.items():
            # Inline fast paths (no call per entry) for String keys and
            # int32/String values; a UnicodeEncodeError becomes
            # InvalidArgumentError in encode().
            if type(key) is str:
                encoded = key_cache.get(key)
                if encoded is None:
                    encoded = string_bytes(key)
                    if len(key) <= 64 and len(key_cache) < _KEY_CACHE_SIZE:
                        key_cache[key] = encoded
                buf += encoded
            else:
                (get(type(key)) or fallback(key))(buf, key, d, ctx)
            tv = type(val)
            if tv is int and _INT32_MIN <= val <= _INT32_MAX:
                buf += hdr_i32(t_int, val)
            elif tv is str and "\0" not in val:
                b = val.encode()
                n = len(b)
                buf += pack_u32x2(t_string, n)
                buf += b
                buf += _PAD[n & 3]
            elif tv is float and val == val:
                try:
                    b = f32_pack(val)
                    exact = f32_unpack(b)[0] == val
                except OverflowError:
                    exact = False
                if exact:
                    buf += hdr_f32
                    buf += b
                else:
                    buf += hdr_f64
                    buf += f64_pack(val)
            elif tv is Vector2:
                try:
                    buf += hdr_vector2_pack(t_vector2, *val)
                except OverflowError:
                    (get(tv) or fallback(val))(buf, val, d, ctx)
            else:
                (get(tv) or fallback(val))(buf, val, d, ctx)

    def enc_typed_dict(buf: bytearray, v: TypedDictionary, depth: int, ctx: _EncodeContext) -> None:
        if godot == 3:
            raise ArgumentTypeError("typed Dictionaries do not exist in Godot 3")
        check_depth(depth + 1, ctx)
        hdr, kt = container_header(t_dict, v.key_type, 16, ctx)
        hdr, vt = container_header(hdr, v.value_type, 18, ctx)
        buf += u32(hdr)
        put_container_type(buf, kt)
        put_container_type(buf, vt)
        buf += u32(len(v))
        for key, val in v.items():
            enc(buf, key, depth + 1, ctx)
            enc(buf, val, depth + 1, ctx)

    def enc_list(buf: bytearray, v: list[Any], depth: int, ctx: _EncodeContext) -> None:
        if depth >= ctx.max_depth:
            check_depth(depth + 1, ctx)
        buf += pack_u32x2(t_array, len(v))
        d = depth + 1
        get = table.get
        for item in v:
            (get(type(item)) or fallback(item))(buf, item, d, ctx)

    def enc_typed_list(buf: bytearray, v: TypedArray, depth: int, ctx: _EncodeContext) -> None:
        if godot == 3:
            raise ArgumentTypeError("typed Arrays do not exist in Godot 3")
        check_depth(depth + 1, ctx)
        hdr, et = container_header(t_array, v.element_type, 16, ctx)
        buf += u32(hdr)
        put_container_type(buf, et)
        buf += u32(len(v))
        for item in v:
            enc(buf, item, depth + 1, ctx)

    def real_encoder(cls: type, wide: bool) -> _Encoder:
        n, flat, _ = _REAL_LAYOUT[cls]
        if wide:
            hdr = u32(ids[_REAL_TYPE_NAME[cls]] | _FLAG_64)
            packer = _F64N[n]

            def enc_real64(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
                buf += hdr
                buf += packer.pack(*flat(v))

            return enc_real64
        hdr = u32(ids[_REAL_TYPE_NAME[cls]])
        packer = _F32N[n]

        def enc_real(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
            buf += hdr
            buf += _pack_f32(packer, flat(v))

        return enc_real

    def int_encoder(cls: type) -> _Encoder:
        n, flat, _ = _INT_LAYOUT[cls]
        hdr = u32(ids[_INT_TYPE_NAME[cls]])
        packer = _I32N[n]

        def enc_ints(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
            buf += hdr
            buf += packer.pack(*flat(v))

        return enc_ints

    hdr_color = u32(ids["COLOR"])

    def enc_color(buf: bytearray, v: Color, depth: int, ctx: _EncodeContext) -> None:
        buf += hdr_color
        buf += _pack_f32(_F32N[4], tuple(v))

    def enc_string_name(buf: bytearray, v: str, depth: int, ctx: _EncodeContext) -> None:
        put_string(buf, v, need("STRING_NAME", "StringName"))

    def enc_node_path(buf: bytearray, v: NodePath, depth: int, ctx: _EncodeContext) -> None:
        buf += u32(ids["NODE_PATH"])
        buf += _U32x3.pack(len(v.names) | 0x80000000, len(v.subnames), 1 if v.absolute else 0)
        for part in (*v.names, *v.subnames):
            put_plain_string(buf, part)

    def enc_rid(buf: bytearray, v: RID, depth: int, ctx: _EncodeContext) -> None:
        if godot == 3:
            buf += u32(ids["RID"])  # 3.x RIDs carry no payload
        else:
            buf += _HDR_U64.pack(ids["RID"], v.id)

    def enc_object_id(buf: bytearray, v: ObjectID, depth: int, ctx: _EncodeContext) -> None:
        buf += _HDR_U64.pack(ids["OBJECT"] | _FLAG_64, v.id)

    def enc_object(buf: bytearray, v: EncodedObject, depth: int, ctx: _EncodeContext) -> None:
        if not ctx.full_objects:
            raise InvalidArgumentError("an EncodedObject is sent whole only with full_objects=True")
        check_depth(depth + 1, ctx)
        buf += u32(ids["OBJECT"])
        put_plain_string(buf, v.class_name)
        buf += u32(len(v.properties))
        for name, val in v.properties.items():
            put_plain_string(buf, name)
            enc(buf, val, depth + 1, ctx)

    def enc_callable(buf: bytearray, v: Callable, depth: int, ctx: _EncodeContext) -> None:
        buf += u32(need("CALLABLE", "Callable"))

    def enc_signal(buf: bytearray, v: Signal, depth: int, ctx: _EncodeContext) -> None:
        buf += u32(need("SIGNAL", "Signal"))
        put_plain_string(buf, v.name)
        buf += _U64.pack(v.object_id)

    hdr_bytes = ids["PACKED_BYTE_ARRAY"]

    def enc_bytes(buf: bytearray, v: Any, depth: int, ctx: _EncodeContext) -> None:
        if isinstance(v, memoryview):
            v = v.cast("B") if v.contiguous else v.tobytes()
        n = len(v)
        buf += _HDR_U32.pack(hdr_bytes, n)
        buf += v
        buf += _PAD[n & 3]

    def enc_array(buf: bytearray, v: array, depth: int, ctx: _EncodeContext) -> None:  # type: ignore[type-arg]
        code = v.typecode
        if _ARRAY_CODES.get(code) != v.itemsize:
            raise ArgumentTypeError(
                f"array typecode {code!r} has no Packed array; use 'i', 'q', 'f' or 'd'"
            )
        tid = need(_ARRAY_TYPE_NAME[code], f"array({code!r})")
        buf += _HDR_U32.pack(tid, len(v))
        if _BIG:
            v = array(code, v)
            v.byteswap()
        buf += v.tobytes()

    def enc_string_array(
        buf: bytearray, v: PackedStringArray, depth: int, ctx: _EncodeContext
    ) -> None:
        buf += _HDR_U32.pack(ids["PACKED_STRING_ARRAY"], len(v))
        for s in v:
            b = _utf8(s)
            n = len(b) + 1  # Godot counts and writes a terminating NUL here
            buf += u32(n)
            buf += b
            buf += b"\0"
            buf += _PAD[n & 3]

    def vec_array_encoder(cls: type, wide: bool) -> _Encoder:
        name, n, _ = _PACKED_VEC[cls]

        def enc_vec_array(buf: bytearray, v: list[Any], depth: int, ctx: _EncodeContext) -> None:
            tid = need(name, cls.__name__)
            count = len(v)
            flat = [c for item in v for c in item]
            if len(flat) != n * count:
                raise InvalidArgumentError(f"{cls.__name__} items need {n} components")
            if wide:
                buf += _HDR_U32.pack(tid | _FLAG_64, count)
                buf += struct.pack(f"<{n * count}d", *flat)
            else:
                buf += _HDR_U32.pack(tid, count)
                buf += _pack_f32(struct.Struct(f"<{n * count}f"), tuple(flat))

        return enc_vec_array

    def enc_color_array(
        buf: bytearray, v: PackedColorArray, depth: int, ctx: _EncodeContext
    ) -> None:
        count = len(v)
        flat = [c for item in v for c in item]
        if len(flat) != 4 * count:
            raise InvalidArgumentError("PackedColorArray items need 4 components")
        buf += _HDR_U32.pack(ids["PACKED_COLOR_ARRAY"], count)
        buf += _pack_f32(struct.Struct(f"<{4 * count}f"), tuple(flat))

    table.update({
        type(None): enc_nil, bool: enc_bool, int: enc_int, Int64: enc_int64,
        float: enc_float, Float64: enc_float64, Float32: enc_float32, str: enc_str,
        StringName: enc_string_name, dict: enc_dict, TypedDictionary: enc_typed_dict,
        list: enc_list, TypedArray: enc_typed_list, Color: enc_color, NodePath: enc_node_path,
        RID: enc_rid, ObjectID: enc_object_id, EncodedObject: enc_object,
        Callable: enc_callable, Signal: enc_signal, bytes: enc_bytes, bytearray: enc_bytes,
        memoryview: enc_bytes, array: enc_array, PackedStringArray: enc_string_array,
        PackedColorArray: enc_color_array,
    })  # fmt: skip
    for cls, name in _REAL_TYPE_NAME.items():
        if name in ids:
            table[cls] = real_encoder(cls, False)
            if godot == 4:
                table[_WIDE[cls]] = real_encoder(cls, True)
    for cls, name in _INT_TYPE_NAME.items():
        if name in ids:
            table[cls] = int_encoder(cls)
    for cls, (name, _, _) in _PACKED_VEC.items():
        if name in ids:
            table[cls] = vec_array_encoder(cls, False)
            if godot == 4:
                table[_WIDE[cls]] = vec_array_encoder(cls, True)

    def encode(value: Any, ctx: _EncodeContext) -> bytes:
        buf = bytearray()
        try:
            fn = table.get(type(value)) or fallback(value)
            fn(buf, value, 0, ctx)
        except struct.error as exc:
            raise InvalidArgumentError(f"value out of range for its Godot type: {exc}") from None
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(f"string is not valid Unicode: {exc}") from None
        except RecursionError:
            raise InvalidArgumentError("value nested too deeply to encode") from None
        return bytes(buf)

    return encode


_ENCODERS = {4: _build_encoder(4), 3: _build_encoder(3)}


def _check_godot(godot: int) -> None:
    if godot not in (3, 4):
        raise InvalidArgumentError(f"godot must be 3 or 4, not {godot!r}")


def var_to_bytes(
    value: Any,
    *,
    full_objects: bool = False,
    godot: int = 4,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> bytes:
    """Encode ``value`` as Godot's ``var_to_bytes`` (``godot=4``) or
    ``var2bytes`` (``godot=3``) does.

    Raises ``ArgumentTypeError`` for a Python type with no Variant form (a
    ``tuple``, a ``set``, a 4.x-only type with ``godot=3``...) and
    ``InvalidArgumentError`` for out-of-range values (an int beyond 64 bits,
    a String with NUL, nesting beyond ``max_depth``, an :class:`EncodedObject`
    without ``full_objects``). Godot returns an empty array instead.
    """
    _check_godot(godot)
    return _ENCODERS[godot](value, _EncodeContext(full_objects, max_depth))


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------


class _DecodeState:
    __slots__ = ("allow_objects", "budget", "max_depth")

    def __init__(self, allow_objects: bool, budget: int, max_depth: int) -> None:
        self.allow_objects = allow_objects
        self.budget = budget
        self.max_depth = max_depth


_Decoded = tuple[Any, int]
_Decoder = _Fn[[bytes, int, int, int, int, _DecodeState], _Decoded]
_TopDecoder = _Fn[[bytes, int, int, int, _DecodeState], _Decoded]


def _fail(message: str, offset: int) -> VariantDecodeError:
    return VariantDecodeError(message, offset)


def _read_string(data: bytes, p: int, end: int) -> _Decoded:
    """Godot's _decode_string: uint32 length, UTF-8, zero pad (which must be
    present); stops at the first NUL, drops a leading BOM, rejects bad UTF-8."""
    if p + 4 > end:
        raise _fail("truncated string length", p)
    n = _U32.unpack_from(data, p)[0]
    start = p + 4
    q = start + n + (-n & 3)
    if q > end:
        raise _fail(f"string of {n} bytes runs past the end", p)
    stop = start + n
    nul = data.find(b"\0", start, stop)
    if nul >= 0:
        stop = nul
    try:
        s = str(data[start:stop], "utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"invalid UTF-8 in string: {exc.reason}", start + exc.start) from None
    if s[:1] == "\ufeff":
        s = s[1:]
    return s, q


def _take_budget(st: _DecodeState, count: int, offset: int) -> None:
    st.budget -= count
    if st.budget < 0:
        raise _fail("element budget exhausted (max_elements)", offset)


def _build_decoder(godot: int) -> _TopDecoder:
    ids = _IDS4 if godot == 4 else _IDS3
    t_nil, t_bool, t_int, t_float = ids["NIL"], ids["BOOL"], ids["INT"], ids["FLOAT"]
    t_string, t_dict, t_array = ids["STRING"], ids["DICTIONARY"], ids["ARRAY"]
    t_vector2 = ids["VECTOR2"]
    type_max = len(ids)
    u32_from = _U32.unpack_from
    i32_from = _I32.unpack_from
    i64_from = _I64.unpack_from
    f32_from = _F32.unpack_from
    f64_from = _F64.unpack_from
    f32x2_from = _F32N[2].unpack_from
    typed = godot == 4
    table: dict[int, _Decoder] = {}

    u32x2_from = _U32x2.unpack_from
    t_float64 = t_float | _FLAG_64
    # Valid String keys by their bytes (bounded: a sender cycling through
    # keys only fills it, after which it stops growing).
    key_cache: dict[bytes, str] = {}
    new_tuple = tuple.__new__

    def dec(data: bytes, pos: int, end: int, depth: int, st: _DecodeState) -> _Decoded:
        # One unpack reads the header and the first payload word: the whole
        # value for INT/BOOL/float32, the length or count for the others.
        if pos + 8 <= end:
            hdr, w = u32x2_from(data, pos)
        elif pos + 4 <= end:
            hdr, w = u32_from(data, pos)[0], -1  # only a header-only value fits
        else:
            raise _fail("truncated header", pos)
        t = hdr & 0xFF
        if t == t_int:
            if hdr & _FLAG_64:
                if pos + 12 > end:
                    raise _fail("truncated 64-bit int", pos + 4)
                v = i64_from(data, pos + 4)[0]
                return (Int64(v) if _INT32_MIN <= v <= _INT32_MAX else v), pos + 12
            if w < 0:
                raise _fail("truncated int", pos + 4)
            return (w - 0x100000000 if w & 0x80000000 else w), pos + 8
        if t == t_string:
            return read_str(data, pos, end, w)
        if t == t_float:
            if hdr & _FLAG_64:
                if pos + 12 > end:
                    raise _fail("truncated 64-bit float", pos + 4)
                f = f64_from(data, pos + 4)[0]
                # Cheap test first: a double float32 holds has 29 zero mantissa bits.
                if not w & 0x1FFFFFFF and f == f:
                    try:
                        if _F32.unpack(_F32.pack(f))[0] == f:
                            return Float64(f), pos + 12
                    except OverflowError:
                        pass
                return f, pos + 12
            if w < 0:
                raise _fail("truncated float", pos + 4)
            f = f32_from(data, pos + 4)[0]
            return (f if f == f else Float32(f)), pos + 8
        if t == t_dict:
            return dec_dict(data, pos, hdr, end, depth, st)
        if t == t_array:
            return dec_array(data, pos, hdr, end, depth, st)
        if t == t_bool:
            if w < 0:
                raise _fail("truncated bool", pos + 4)
            return w != 0, pos + 8
        if t == t_nil:
            return None, pos + 4
        if t == t_vector2 and not (typed and hdr & _FLAG_64):
            if pos + 12 > end:
                raise _fail("truncated Vector2", pos + 4)
            return new_tuple(Vector2, f32x2_from(data, pos + 4)), pos + 12
        fn = table.get(t) if t < type_max else None
        if fn is None:
            raise _fail(f"unknown Variant type id {t}", pos)
        return fn(data, pos + 4, end, hdr, depth, st)

    def read_str(data: bytes, pos: int, end: int, n: int) -> _Decoded:
        """A STRING whose header word is at pos and length word is n."""
        start = pos + 8
        q = start + n + (-n & 3)
        if n < 0 or q > end:
            return _read_string(data, pos + 4, end)  # reports the error
        try:
            s = data[start : start + n].decode()
        except UnicodeDecodeError:
            return _read_string(data, pos + 4, end)  # NUL before the bad byte, or the error
        if "\x00" in s or s[:1] == "\ufeff":
            return _read_string(data, pos + 4, end)
        return s, q

    def read_container_type(
        data: bytes, p: int, end: int, kind: int
    ) -> tuple[Optional[ContainerType], int]:
        if kind == 0:
            return None, p
        if kind == 1:
            if p + 4 > end:
                raise _fail("truncated container type", p)
            tid = u32_from(data, p)[0]
            if tid >= type_max:
                raise _fail(f"container type id {tid} out of range", p)
            return ContainerType(1, tid), p + 4
        name, q = _read_string(data, p, end)
        return ContainerType(kind, 0, name), q

    def enter(depth: int, st: _DecodeState, pos: int) -> int:
        depth += 1
        if depth > st.max_depth:
            raise _fail(f"nested deeper than {st.max_depth} (max_depth)", pos)
        return depth

    def dec_dict(
        data: bytes, pos: int, hdr: int, end: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        p = pos + 4
        d = enter(depth, st, pos)
        result: dict[Any, Any]
        if typed and hdr & 0xF0000:
            kt, p = read_container_type(data, p, end, (hdr >> 16) & 3)
            vt, p = read_container_type(data, p, end, (hdr >> 18) & 3)
            result = TypedDictionary(kt, vt)
        else:
            result = {}
        if p + 4 > end:
            raise _fail("truncated Dictionary count", p)
        count = u32_from(data, p)[0] & 0x7FFFFFFF  # bit 31: the old "shared" flag
        p += 4
        if count * 8 > end - p:
            raise _fail(f"Dictionary of {count} entries cannot fit the remaining bytes", p - 4)
        st.budget -= count
        if st.budget < 0:
            raise _fail("element budget exhausted (max_elements)", p - 4)
        for _ in range(count):
            kpos = p
            # Inline fast paths (no call per entry): a String key, then an
            # INT, String, float or bool value; anything else (and every
            # error) goes through dec().
            key = None
            if p + 8 <= end:
                hdr, w = u32x2_from(data, p)
                if hdr == t_string:
                    start = p + 8
                    q = start + w + (-w & 3)
                    if q <= end:
                        raw = data[start : start + w]
                        key = key_cache.get(raw)
                        if key is not None:
                            p = q
                        else:
                            try:
                                key = raw.decode()
                            except UnicodeDecodeError:
                                key = None
                            else:
                                if "\x00" in key or key[:1] == "\ufeff":
                                    key = None
                                else:
                                    p = q
                                    if w <= 64 and len(key_cache) < _KEY_CACHE_SIZE:
                                        key_cache[bytes(raw)] = key
            if key is None:
                key, p = dec(data, p, end, d, st)
            val: Any
            if p + 12 <= end:
                hdr, w = u32x2_from(data, p)
                if hdr == t_int:
                    val = w - 0x100000000 if w & 0x80000000 else w
                    p += 8
                elif hdr == t_string:
                    val, p = read_str(data, p, end, w)
                elif hdr == t_float64 and w & 0x1FFFFFFF:  # not float32-exact: plain float
                    val = f64_from(data, p + 4)[0]
                    p += 12
                elif hdr == t_float:
                    val = f32_from(data, p + 4)[0]
                    if val != val:
                        val = Float32(val)
                    p += 8
                elif hdr == t_bool:
                    val = w != 0
                    p += 8
                elif hdr == t_vector2:
                    val = new_tuple(Vector2, f32x2_from(data, p + 4))
                    p += 12
                else:
                    val, p = dec(data, p, end, d, st)
            else:
                val, p = dec(data, p, end, d, st)
            try:
                result[key] = val
            except TypeError:
                raise _fail(
                    f"Dictionary key of type {type(key).__name__} is unhashable", kpos
                ) from None
        return result, p

    def dec_array(
        data: bytes, pos: int, hdr: int, end: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        p = pos + 4
        d = enter(depth, st, pos)
        et = None
        if typed and hdr & 0x30000:
            et, p = read_container_type(data, p, end, (hdr >> 16) & 3)
        if p + 4 > end:
            raise _fail("truncated Array count", p)
        count = u32_from(data, p)[0] & 0x7FFFFFFF
        p += 4
        if count * 4 > end - p:
            raise _fail(f"Array of {count} items cannot fit the remaining bytes", p - 4)
        st.budget -= count
        if st.budget < 0:
            raise _fail("element budget exhausted (max_elements)", p - 4)
        items: list[Any] = []
        append = items.append
        for _ in range(count):
            v, p = dec(data, p, end, d, st)
            append(v)
        if et is not None:
            return TypedArray(et, items), p
        return items, p

    def real_decoder(cls: type) -> _Decoder:
        n, _, make = _REAL_LAYOUT[cls]
        f32n = _F32N[n].unpack_from
        f64n = _F64N[n].unpack_from
        wide_cls = _WIDE[cls]

        def dec_real(
            data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
        ) -> _Decoded:
            if typed and hdr & _FLAG_64:
                if p + 8 * n > end:
                    raise _fail(f"truncated {cls.__name__}", p)
                return make(wide_cls, f64n(data, p)), p + 8 * n
            if p + 4 * n > end:
                raise _fail(f"truncated {cls.__name__}", p)
            return make(cls, f32n(data, p)), p + 4 * n

        return dec_real

    def int_decoder(cls: type) -> _Decoder:
        n, _, make = _INT_LAYOUT[cls]
        unpack = _I32N[n].unpack_from

        def dec_ints(
            data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
        ) -> _Decoded:
            if p + 4 * n > end:
                raise _fail(f"truncated {cls.__name__}", p)
            return make(unpack(data, p)), p + 4 * n

        return dec_ints

    def dec_color(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if p + 16 > end:  # always float32, FLAG_64 ignored (as Godot)
            raise _fail("truncated Color", p)
        return Color(*_F32N[4].unpack_from(data, p)), p + 16

    def dec_string_name(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        s, q = _read_string(data, p, end)
        return StringName(s), q

    def dec_node_path(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if p + 12 > end:
            raise _fail("truncated NodePath", p)
        names, subnames, flags = _U32x3.unpack_from(data, p)
        if not names & 0x80000000:
            raise _fail("NodePath in the old format (no 0x80000000 marker)", p)
        names &= 0x7FFFFFFF
        if flags & 2:
            subnames += 1  # obsolete "property" flag: one more subname (as Godot)
        total = names + subnames
        q = p + 12
        if total * 4 > end - q:
            raise _fail(f"NodePath of {total} parts cannot fit the remaining bytes", p)
        _take_budget(st, total, p)
        parts = []
        for _ in range(total):
            s, q = _read_string(data, q, end)
            parts.append(s)
        return NodePath(tuple(parts[:names]), tuple(parts[names:]), bool(flags & 1)), q

    def dec_rid(data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState) -> _Decoded:
        if not typed:
            return RID(0), p  # 3.x: no payload
        if p + 8 > end:
            raise _fail("truncated RID", p)
        return RID(_U64.unpack_from(data, p)[0]), p + 8

    def dec_object(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if hdr & _FLAG_64:
            if p + 8 > end:
                raise _fail("truncated Object id", p)
            return ObjectID(_U64.unpack_from(data, p)[0]), p + 8
        if not st.allow_objects:
            raise _fail("a full Object (objects are not allowed: allow_objects=False)", p - 4)
        d = enter(depth, st, p - 4)
        class_name, q = _read_string(data, p, end)
        if not class_name:
            return None, q  # Godot: a null Object
        if q + 4 > end:
            raise _fail("truncated Object property count", q)
        count = u32_from(data, q)[0]
        q += 4
        if count * 8 > end - q:
            raise _fail(f"Object with {count} properties cannot fit the remaining bytes", q - 4)
        _take_budget(st, count, q - 4)
        props: dict[str, Any] = {}
        for _ in range(count):
            name, q = _read_string(data, q, end)
            props[name], q = dec(data, q, end, d, st)
        return EncodedObject(class_name, props), q

    def dec_callable(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        return Callable(), p

    def dec_signal(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        name, q = _read_string(data, p, end)
        if q + 8 > end:
            raise _fail("truncated Signal object id", q)
        return Signal(name, _U64.unpack_from(data, q)[0]), q + 8

    def dec_bytes(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if p + 4 > end:
            raise _fail("truncated PackedByteArray count", p)
        n = u32_from(data, p)[0]
        start = p + 4
        if n > end - start:  # padding may be missing (as Godot)
            raise _fail(f"PackedByteArray of {n} bytes runs past the end", p)
        return bytes(data[start : start + n]), start + n + (-n & 3)

    def array_decoder(code: str) -> _Decoder:
        size = _ARRAY_CODES[code]

        def dec_array_numbers(
            data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
        ) -> _Decoded:
            if p + 4 > end:
                raise _fail("truncated Packed array count", p)
            n = u32_from(data, p)[0]
            start = p + 4
            if n > (end - start) // size:
                raise _fail(f"Packed array of {n} items runs past the end", p)
            out = array(code)
            out.frombytes(data[start : start + n * size])
            if _BIG:
                out.byteswap()
            return out, start + n * size

        return dec_array_numbers

    def dec_string_array(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if p + 4 > end:
            raise _fail("truncated PackedStringArray count", p)
        n = i32_from(data, p)[0]  # negative: an empty array (as Godot)
        q = p + 4
        out = PackedStringArray()
        if n <= 0:
            return out, q
        if n * 4 > end - q:
            raise _fail(f"PackedStringArray of {n} items cannot fit the remaining bytes", p)
        _take_budget(st, n, p)
        append = out.append
        for _ in range(n):
            s, q = _read_string(data, q, end)
            append(s)
        return out, q

    def vec_array_decoder(cls: type) -> _Decoder:
        _, n, item = _PACKED_VEC[cls]
        wide_cls = _WIDE[cls]

        def dec_vec_array(
            data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
        ) -> _Decoded:
            if p + 4 > end:
                raise _fail(f"truncated {cls.__name__} count", p)
            count = u32_from(data, p)[0]
            start = p + 4
            wide = typed and hdr & _FLAG_64
            size = (8 if wide else 4) * n
            if count > (end - start) // size:
                raise _fail(f"{cls.__name__} of {count} items runs past the end", p)
            _take_budget(st, count, p)
            values = array("d" if wide else "f")
            values.frombytes(data[start : start + count * size])
            if _BIG:
                values.byteswap()
            it = iter(values)
            out = (wide_cls if wide else cls)(map(item._make, zip(*([it] * n))))
            return out, start + count * size

        return dec_vec_array

    def dec_color_array(
        data: bytes, p: int, end: int, hdr: int, depth: int, st: _DecodeState
    ) -> _Decoded:
        if p + 4 > end:
            raise _fail("truncated PackedColorArray count", p)
        count = u32_from(data, p)[0]
        start = p + 4
        if count > (end - start) // 16:
            raise _fail(f"PackedColorArray of {count} items runs past the end", p)
        _take_budget(st, count, p)
        values = array("f")
        values.frombytes(data[start : start + count * 16])
        if _BIG:
            values.byteswap()
        it = iter(values)
        return PackedColorArray(map(Color._make, zip(it, it, it, it))), start + count * 16

    table[ids["COLOR"]] = dec_color
    table[ids["NODE_PATH"]] = dec_node_path
    table[ids["RID"]] = dec_rid
    table[ids["OBJECT"]] = dec_object
    table[ids["PACKED_BYTE_ARRAY"]] = dec_bytes
    table[ids["PACKED_STRING_ARRAY"]] = dec_string_array
    table[ids["PACKED_COLOR_ARRAY"]] = dec_color_array
    for code, name in _ARRAY_TYPE_NAME.items():
        if name in ids:
            table[ids[name]] = array_decoder(code)
    for cls, name in _REAL_TYPE_NAME.items():
        if name in ids:
            table[ids[name]] = real_decoder(cls)
    for cls, name in _INT_TYPE_NAME.items():
        if name in ids:
            table[ids[name]] = int_decoder(cls)
    for cls, (name, _, _) in _PACKED_VEC.items():
        if name in ids:
            table[ids[name]] = vec_array_decoder(cls)
    if typed:
        table[ids["STRING_NAME"]] = dec_string_name
        table[ids["CALLABLE"]] = dec_callable
        table[ids["SIGNAL"]] = dec_signal

    return dec


_DECODERS = {4: _build_decoder(4), 3: _build_decoder(3)}

BytesLike = Union[bytes, bytearray, memoryview]


def decode_var(
    data: BytesLike,
    offset: int = 0,
    *,
    allow_objects: bool = False,
    godot: int = 4,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> tuple[Any, int]:
    """Decode one Variant starting at ``offset``; returns ``(value, end)``,
    ``end`` being the offset just past it (past its padding). For framed or
    concatenated encodings; :func:`bytes_to_var` is the Godot-named form."""
    return _decode(data, offset, allow_objects, godot, max_depth, max_elements)


def _decode(
    data: BytesLike,
    offset: int,
    allow_objects: bool,
    godot: int,
    max_depth: int,
    max_elements: int,
) -> tuple[Any, int]:
    decoder = _DECODERS.get(godot)
    if decoder is None:
        _check_godot(godot)
    if type(data) is not bytes:
        if isinstance(data, memoryview):
            data = data.tobytes()  # find() and str() need bytes; one copy for views only
        elif not isinstance(data, (bytes, bytearray)):
            raise ArgumentTypeError(f"data must be bytes-like, not {type(data).__name__}")
    buf: bytes = data  # type: ignore[assignment]  # bytearray reads the same
    end = len(buf)
    if not 0 <= offset <= end:
        raise InvalidArgumentError(f"offset {offset} outside the data")
    try:
        return decoder(buf, offset, end, 0, _DecodeState(allow_objects, max_elements, max_depth))  # type: ignore[misc]
    except RecursionError:
        raise VariantDecodeError("nested deeper than Python's recursion limit", offset) from None


def bytes_to_var(
    data: BytesLike,
    *,
    allow_objects: bool = False,
    godot: int = 4,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Any:
    """Decode Godot's ``var_to_bytes`` output (``godot=3``: ``var2bytes``).

    Trailing bytes are ignored (as Godot). Failures raise
    :class:`VariantDecodeError` with the offset (Godot returns ``null``).
    Full Objects raise unless ``allow_objects`` is true, and then decode to
    an inert :class:`EncodedObject`; Objects sent as ids decode to
    :class:`ObjectID` either way (Godot: ``EncodedObjectAsID``).
    """
    return _decode(data, 0, allow_objects, godot, max_depth, max_elements)[0]


var2bytes = var_to_bytes
"""Godot 3.x name of :func:`var_to_bytes` (pass ``godot=3`` for the 3.x format)."""
bytes2var = bytes_to_var
"""Godot 3.x name of :func:`bytes_to_var` (pass ``godot=3`` for the 3.x format)."""

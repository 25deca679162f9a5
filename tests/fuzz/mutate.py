"""Seeded mutators: DTLS datagrams (record-aware) and PEM/DER inputs.

Everything draws from the ``random.Random`` it is given, so a test with a
fixed seed feeds the same inputs on every run.
"""

from __future__ import annotations

import base64
import random
import re
from typing import Callable, Optional

RECORD_HEADER = 13  # type(1) version(2) epoch(2) sequence(6) length(2)
HANDSHAKE_HEADER = 12  # type(1) length(3) message_seq(2) frag_offset(3) frag_length(3)
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_U16 = (0, 1, 12, 13, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF)
INTERESTING_U24 = (0, 1, 0xFF, 0x100, 0x3FFF, 0x4000, 0xFFFF, 0xFFFFFF)
CONTENT_TYPES = (20, 21, 22, 23, 25, 0, 24, 255)


def split_records(data: bytes) -> tuple[list[bytearray], bytes]:
    """DTLS records of a datagram by their length fields; the rest (a
    truncated record or garbage) as trailing bytes."""
    records: list[bytearray] = []
    pos = 0
    while len(data) - pos >= RECORD_HEADER:
        length = int.from_bytes(data[pos + 11:pos + 13], "big")
        end = pos + RECORD_HEADER + length
        if end > len(data):
            break
        records.append(bytearray(data[pos:end]))
        pos = end
    return records, data[pos:]


def _put(buf: bytearray, at: int, value: int, size: int) -> None:
    if 0 <= at and at + size <= len(buf):
        buf[at:at + size] = value.to_bytes(size, "big")


class DatagramMutator:
    """Mutates DTLS datagrams; ``pool`` supplies records to splice in."""

    def __init__(self, rng: random.Random, pool: list[bytes]) -> None:
        self.rng = rng
        self.pool = [p for p in pool if p]
        self.pool_records = [r for p in self.pool for r in split_records(p)[0]]
        self._ops: list[Callable[[bytearray], bytearray]] = [
            self.flip_bits, self.set_byte, self.truncate, self.extend, self.cut_range,
            self.record_length, self.record_type, self.record_version, self.record_epoch,
            self.record_sequence, self.duplicate_record, self.drop_record, self.swap_records,
            self.splice_record, self.handshake_header, self.splice_tail,
        ]

    def mutate(self, data: bytes, rounds: Optional[int] = None) -> bytes:
        """1..4 random mutations of data (rounds fixes the count)."""
        buf = bytearray(data)
        for _ in range(rounds if rounds is not None else self.rng.randint(1, 4)):
            buf = self.rng.choice(self._ops)(buf)
        return bytes(buf)

    # -- bytes ---------------------------------------------------------------

    def flip_bits(self, buf: bytearray) -> bytearray:
        for _ in range(self.rng.randint(1, 4)):
            if buf:
                buf[self.rng.randrange(len(buf))] ^= 1 << self.rng.randrange(8)
        return buf

    def set_byte(self, buf: bytearray) -> bytearray:
        if buf:
            buf[self.rng.randrange(len(buf))] = self.rng.choice(INTERESTING_BYTES)
        return buf

    def truncate(self, buf: bytearray) -> bytearray:
        return buf[:self.rng.randrange(len(buf) + 1)]

    def extend(self, buf: bytearray) -> bytearray:
        return buf + bytearray(self.rng.randbytes(self.rng.choice((1, 2, 13, 64, 300))))

    def cut_range(self, buf: bytearray) -> bytearray:
        if len(buf) < 2:
            return buf
        a = self.rng.randrange(len(buf))
        b = min(len(buf), a + self.rng.randint(1, 32))
        return buf[:a] + buf[b:]

    def splice_tail(self, buf: bytearray) -> bytearray:
        if not self.pool:
            return buf
        other = self.rng.choice(self.pool)
        return buf[:self.rng.randrange(len(buf) + 1)] + other[self.rng.randrange(len(other)):]

    # -- record headers --------------------------------------------------------

    def _edit_record(self, buf: bytearray, edit: Callable[[bytearray], None]) -> bytearray:
        records, rest = split_records(bytes(buf))
        if not records:
            if len(buf) >= RECORD_HEADER:
                edit(buf)
            return buf
        edit(self.rng.choice(records))
        return bytearray(b"".join(records) + rest)

    def record_length(self, buf: bytearray) -> bytearray:
        def edit(r: bytearray) -> None:
            old = int.from_bytes(r[11:13], "big")
            choice = self.rng.choice((old + 1, old - 1, old + 13, *INTERESTING_U16))
            _put(r, 11, choice & 0xFFFF, 2)
        return self._edit_record(buf, edit)

    def record_type(self, buf: bytearray) -> bytearray:
        def edit(r: bytearray) -> None:
            r[0] = self.rng.choice(CONTENT_TYPES)
        return self._edit_record(buf, edit)

    def record_version(self, buf: bytearray) -> bytearray:
        def edit(r: bytearray) -> None:
            r[1:3] = self.rng.choice((b"\xfe\xff", b"\xfe\xfd", b"\xfe\xfc", b"\x03\x03",
                                      b"\x00\x00", b"\xff\xff"))
        return self._edit_record(buf, edit)

    def record_epoch(self, buf: bytearray) -> bytearray:
        def edit(r: bytearray) -> None:
            _put(r, 3, self.rng.choice((0, 1, 2, 0xFFFF)), 2)
        return self._edit_record(buf, edit)

    def record_sequence(self, buf: bytearray) -> bytearray:
        def edit(r: bytearray) -> None:
            old = int.from_bytes(r[5:11], "big")
            value = self.rng.choice((0, 1, old + 1, max(old - 1, 0), old + 64, old + 65,
                                     2**48 - 1, 2**47))
            _put(r, 5, value % 2**48, 6)
        return self._edit_record(buf, edit)

    def handshake_header(self, buf: bytearray) -> bytearray:
        """Edit a handshake message header (type, length, message_seq,
        fragment offset/length) of a plaintext handshake record."""
        def edit(r: bytearray) -> None:
            if len(r) < RECORD_HEADER + HANDSHAKE_HEADER:
                return
            h = RECORD_HEADER
            field_, size = self.rng.choice(((0, 1), (1, 3), (4, 2), (6, 3), (9, 3)))
            if size == 1:
                r[h] = self.rng.choice((0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 20, 255))
            elif size == 2:
                _put(r, h + field_, self.rng.choice(INTERESTING_U16), 2)
            else:
                old = int.from_bytes(r[h + field_:h + field_ + 3], "big")
                _put(r, h + field_, self.rng.choice((old + 1, max(old - 1, 0),
                                                     *INTERESTING_U24)) & 0xFFFFFF, 3)
        return self._edit_record(buf, edit)

    # -- whole records ---------------------------------------------------------

    def duplicate_record(self, buf: bytearray) -> bytearray:
        records, rest = split_records(bytes(buf))
        if records:
            i = self.rng.randrange(len(records))
            records.insert(self.rng.randrange(len(records) + 1), bytearray(records[i]))
        return bytearray(b"".join(records) + rest)

    def drop_record(self, buf: bytearray) -> bytearray:
        records, rest = split_records(bytes(buf))
        if len(records) > 1:
            del records[self.rng.randrange(len(records))]
        return bytearray(b"".join(records) + rest)

    def swap_records(self, buf: bytearray) -> bytearray:
        records, rest = split_records(bytes(buf))
        if len(records) > 1:
            i, j = self.rng.sample(range(len(records)), 2)
            records[i], records[j] = records[j], records[i]
        return bytearray(b"".join(records) + rest)

    def splice_record(self, buf: bytearray) -> bytearray:
        if not self.pool_records:
            return buf
        records, rest = split_records(bytes(buf))
        records.insert(self.rng.randrange(len(records) + 1),
                       bytearray(self.rng.choice(self.pool_records)))
        return bytearray(b"".join(records) + rest)


_PEM_BLOCK = re.compile(rb"(-----BEGIN [^-]+-----\r?\n)(.*?)(-----END [^-]+-----)", re.S)


class PemDerMutator:
    """Mutates DER, or the DER inside PEM armour (re-encoded), or the armour."""

    def __init__(self, rng: random.Random, pool: list[bytes]) -> None:
        self.rng = rng
        self.pool = pool
        self.der = DatagramMutator(rng, [])

    def mutate_der(self, der: bytes) -> bytes:
        """Byte-level and ASN.1-length-aware mutations."""
        buf = bytearray(der)
        for _ in range(self.rng.randint(1, 3)):
            op = self.rng.randrange(6)
            if op == 0:
                buf = self.der.flip_bits(buf)
            elif op == 1:
                buf = self.der.truncate(buf)
            elif op == 2 and buf:
                # An ASN.1 length byte: find a tag-ish position and corrupt the next byte.
                i = self.rng.randrange(len(buf))
                if i + 1 < len(buf):
                    buf[i + 1] = self.rng.choice((0x00, 0x7F, 0x80, 0x81, 0x82, 0x84, 0x89, 0xFF))
            elif op == 3:
                buf = self.der.set_byte(buf)
            elif op == 4:
                buf = self.der.cut_range(buf)
            elif op == 5 and self.pool:
                other = self._der_of(self.rng.choice(self.pool))
                a = self.rng.randrange(len(buf) + 1)
                b = self.rng.randrange(len(other) + 1)
                buf = buf[:a] + bytearray(other[b:b + self.rng.randint(1, 64)]) + buf[a:]
        return bytes(buf)

    @staticmethod
    def _der_of(data: bytes) -> bytes:
        m = _PEM_BLOCK.search(data)
        if m is None:
            return data
        try:
            return base64.b64decode(re.sub(rb"\s+", b"", m.group(2)))
        except ValueError:
            return data

    def mutate(self, data: bytes) -> bytes:
        """One mutated input (PEM stays PEM most of the time)."""
        blocks = list(_PEM_BLOCK.finditer(data))
        if not blocks:
            return self.mutate_der(data)
        op = self.rng.randrange(5)
        if op <= 1:
            # Mutate the DER of one block, then re-armour it.
            m = self.rng.choice(blocks)
            der = self.mutate_der(self._der_of(m.group(0)))
            b64 = base64.b64encode(der)
            body = b"\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + b"\n"
            return data[:m.start(2)] + body + data[m.end(2):]
        if op == 2:
            # Damage the base64 text itself (bad characters, lost lines).
            m = self.rng.choice(blocks)
            body = bytearray(m.group(2))
            for _ in range(self.rng.randint(1, 3)):
                if body:
                    body[self.rng.randrange(len(body))] = self.rng.choice(b"=-*\n\r \x00A/+")
            return data[:m.start(2)] + bytes(body) + data[m.end(2):]
        if op == 3:
            # Armour: drop or damage an END line, change a label, repeat a block.
            m = self.rng.choice(blocks)
            choice = self.rng.randrange(4)
            if choice == 0:
                return data[:m.start(3)] + data[m.end(3):]
            if choice == 1:
                return data[:m.start(1)] + b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + \
                    data[m.end(1):]
            if choice == 2:
                return data + m.group(0) + b"\n"
            return data[:m.start(3)] + b"-----END CERTIFICATE----" + data[m.end(3):]
        return bytes(self.der.truncate(bytearray(data)))

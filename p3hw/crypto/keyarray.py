"""Key arrays (spec §2.1.1.1 "Keys"; Appendix A `array_size`, `data_array_time`,
`control_array_time`; DESIGN.md §4.4).

The primary generates an array of `array_size` secret entries and delivers
it to the secondary through the control channel (KEY_ARRAY messages, in
chunks that fit one control packet). Afterwards, every `data_array_time`
(`control_array_time`) seconds a rekey names an *index* into the data
(control) array instead of carrying the key. The installed material is

    prf+(HMAC-SHA-256, entry[index], "P3 key array" | kind | generation | index | nonce)

(RFC 7296 §2.13 prf+) with a fresh 32-octet nonce chosen by the primary for
that rekey, so naming the same index twice never installs the same key, and
the key itself never crosses the link in that rekey.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from p3hw.crypto.keysource import KeySource
from p3hw.crypto.prf import prf_hmac_sha256, prf_plus
from p3hw.reasons import P3Error

#: Octets per array entry (an HMAC-SHA-256 key of full strength).
KEY_ARRAY_ENTRY_BYTES = 32
#: Entries per KEY_ARRAY message: 32 x 32 = 1024 octets, below the control
#: message limit (p3hw.wire.control.MAX_MESSAGE_BYTES).
ENTRIES_PER_CHUNK = 32
#: The fresh nonce a rekey sends with an index.
ARRAY_NONCE_BYTES = 32
#: Largest array accepted from a peer (Appendix A does not bound array_size;
#: 65536 entries = 2 MiB is far above the default 256).
MAX_ARRAY_SIZE = 65536

_LABEL = b"P3 key array"


class ArrayKind(IntEnum):
    DATA = 1
    CONTROL = 2


@dataclass(frozen=True)
class KeyArray:
    kind: ArrayKind
    generation: int
    entries: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return len(self.entries)

    def derive(self, index: int, nonce: bytes, length: int) -> bytes:
        """The material a rekey naming (*index*, *nonce*) installs."""
        if not 0 <= index < self.size:
            raise P3Error("KEY_ARRAY_INDEX", f"{self.kind.name.lower()} key-array index {index} not in 0..{self.size - 1}")
        if len(nonce) != ARRAY_NONCE_BYTES:
            raise P3Error("CTL_MALFORMED", f"key-array nonce must be {ARRAY_NONCE_BYTES} octets, not {len(nonce)}")
        seed = _LABEL + struct.pack("!BII", self.kind, self.generation, index) + nonce
        return prf_plus(prf_hmac_sha256, self.entries[index], seed, length)

    def chunks(self) -> list[dict[str, int | bytes]]:
        """KEY_ARRAY message fields, one dict per message."""
        count = (self.size + ENTRIES_PER_CHUNK - 1) // ENTRIES_PER_CHUNK
        return [
            {
                "array_kind": int(self.kind),
                "generation": self.generation,
                "array_size": self.size,
                "chunk_index": number,
                "chunk_count": count,
                "first_index": number * ENTRIES_PER_CHUNK,
                "entries": b"".join(self.entries[number * ENTRIES_PER_CHUNK:(number + 1) * ENTRIES_PER_CHUNK]),
            }
            for number in range(count)
        ]


def generate_key_array(kind: ArrayKind, generation: int, size: int, source: KeySource) -> KeyArray:
    if not 1 <= size <= MAX_ARRAY_SIZE:
        raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"array_size {size} is not in 1..{MAX_ARRAY_SIZE}")
    entries = tuple(source.random_bytes(KEY_ARRAY_ENTRY_BYTES) for _ in range(size))
    return KeyArray(kind, generation, entries)


@dataclass
class ArraySchedule:
    """The primary's side of one array kind: when a rekey names an index.

    The array becomes usable when the secondary has acknowledged every
    chunk; the first index is named `array_time_s` after that, then every
    `array_time_s` seconds (at the first rekey at or after that time).
    Indexes are taken in order and wrap, so every entry is used before any
    is used again.
    """

    kind: ArrayKind
    array_time_s: float
    array: KeyArray | None = None
    delivered: bool = False
    next_use_s: float = 0.0
    cursor: int = 0
    uses: list[tuple[float, int]] = field(default_factory=list)

    def install(self, array: KeyArray) -> None:
        self.array, self.delivered, self.cursor = array, False, 0

    def mark_delivered(self, now: float) -> None:
        self.delivered = True
        self.next_use_s = now + self.array_time_s

    def flush(self) -> None:
        self.array, self.delivered = None, False

    def due(self, now: float) -> bool:
        return self.array is not None and self.delivered and now >= self.next_use_s

    def take_index(self, now: float) -> int:
        assert self.array is not None
        index = self.cursor
        self.cursor = (self.cursor + 1) % self.array.size
        self.next_use_s = now + self.array_time_s
        self.uses.append((now, index))
        return index


class KeyArrayStore:
    """The secondary's arrays: assembles KEY_ARRAY chunks, answers lookups."""

    def __init__(self) -> None:
        self.current: dict[ArrayKind, KeyArray] = {}
        self._partial: dict[tuple[ArrayKind, int], dict[int, bytes]] = {}
        self._partial_shape: dict[tuple[ArrayKind, int], tuple[int, int]] = {}

    def add_chunk(self, fields: dict[str, int | bytes | str]) -> KeyArray | None:
        """Store one KEY_ARRAY chunk; returns the array once it is complete."""
        try:
            kind = ArrayKind(fields["array_kind"])
        except ValueError:
            raise P3Error("CTL_MALFORMED", f"unknown key-array kind {fields['array_kind']}") from None
        generation, size = fields["generation"], fields["array_size"]
        number, count, first = fields["chunk_index"], fields["chunk_count"], fields["first_index"]
        entries = fields["entries"]
        assert isinstance(generation, int) and isinstance(size, int) and isinstance(number, int)
        assert isinstance(count, int) and isinstance(first, int) and isinstance(entries, bytes)
        if not 1 <= size <= MAX_ARRAY_SIZE or count != (size + ENTRIES_PER_CHUNK - 1) // ENTRIES_PER_CHUNK:
            raise P3Error("CTL_MALFORMED", f"key array of {size} entries in {count} chunks is inconsistent")
        expected = min(ENTRIES_PER_CHUNK, size - number * ENTRIES_PER_CHUNK) if number < count else 0
        if number >= count or first != number * ENTRIES_PER_CHUNK or len(entries) != expected * KEY_ARRAY_ENTRY_BYTES:
            raise P3Error("CTL_MALFORMED", f"key-array chunk {number}/{count} has a wrong position or length")
        key = (kind, generation)
        shape = self._partial_shape.setdefault(key, (size, count))
        if shape != (size, count):
            raise P3Error("CTL_MALFORMED", "key-array chunks of one generation disagree on its size")
        chunks = self._partial.setdefault(key, {})
        chunks[number] = entries
        if len(chunks) < count:
            return None
        blob = b"".join(chunks[i] for i in range(count))
        array = KeyArray(
            kind, generation,
            tuple(blob[i:i + KEY_ARRAY_ENTRY_BYTES] for i in range(0, len(blob), KEY_ARRAY_ENTRY_BYTES)),
        )
        del self._partial[key], self._partial_shape[key]
        self.current[kind] = array
        return array

    def flush(self, kind: ArrayKind, generation: int) -> None:
        array = self.current.get(kind)
        if array is not None and array.generation == generation:
            del self.current[kind]
        self._partial.pop((kind, generation), None)
        self._partial_shape.pop((kind, generation), None)

    def lookup(self, kind: ArrayKind, generation: int) -> KeyArray:
        array = self.current.get(kind)
        if array is None or array.generation != generation:
            raise P3Error("KEY_ARRAY_MISSING", f"rekey names {kind.name.lower()} key array generation {generation}, which is not installed")
        return array

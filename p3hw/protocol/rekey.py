"""In-band rekeying (spec §2.1.6, DESIGN.md §4.3).

Only the primary initiates, every `rekey_wait` seconds (per remote) and on
demand::

    primary                                         secondary
    REKEY(rekey_id, data keys | array index+nonce,
          control keys | index+nonce,
          primary's new inbound P3 ID [, X25519 share]) ─►
                                                    installs its new inbound SA
                            ◄─ REKEY_STATUS(rekey_id, status,
                                  secondary's new inbound P3 ID [, share])
    installs its new inbound SA, switches its
    outbound SA and control key,
    SWITCH(rekey_id, first seq sealed with new) ─►
                                                    switches outbound + control key
                            ◄─ SWITCH_ACK(rekey_id, its first seq)

P3 IDs are allocated by the receiver of the SA (DESIGN.md §3): the REKEY
carries the primary's new inbound ID, the REKEY_STATUS the secondary's.
Each side installs a new inbound SA *before* the peer can seal with it, and
removes the old inbound SA only `grace_s` seconds after the peer announced
its switch, so no packet in flight is lost or rejected. Control keys follow
the same order (the sealed control header names the key epoch, which is the
rekey id modulo 2^16).

Retries (spec §2.1.6): an unanswered REKEY or SWITCH is retransmitted up to
four times by the control channel (a lost REKEY_STATUS or SWITCH_ACK is
re-sent from the peer's answer cache when the request is retransmitted); a
REKEY_STATUS with a failure status starts a fresh attempt, up to four
times. After that the machine reports `RekeyFailed` (P3-E402) and the
session runs recovery.

With `pfs` on, REKEY and REKEY_STATUS carry X25519 public keys (RFC 7748);
the delivered material is mixed with the shared secret through prf+
(RFC 7296 §2.13), so recording the control channel and later learning a
control key does not reveal the data keys of that rekey.

The machine returns actions (dataclasses below) for the dataplane; the
runtime (or the test harness) executes them. `InstallOutboundSa` must be
answered with `outbound_installed(p3_id, first_seq, now)`, where
*first_seq* is the first sequence number the dataplane seals with the new SA.
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field
from enum import Enum

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p3hw.constants import DEFAULT_REKEY_WAIT_S, REKEY_MAX_RETRIES
from p3hw.crypto.keyarray import ARRAY_NONCE_BYTES, ArrayKind, ArraySchedule, KeyArrayStore
from p3hw.crypto.keys import CONTROL_KEY_BYTES, SaKeys, material_length
from p3hw.crypto.keysource import KeySource
from p3hw.crypto.prf import prf_hmac_sha256, prf_plus
from p3hw.protocol.control import ControlChannel
from p3hw.protocol.ids import IdSource
from p3hw.reasons import P3Error
from p3hw.wire.control import ControlMessage, FieldValue, MsgType

#: Implementation constant: how long an old inbound SA (and control key) stays
#: installed after the peer announced its switch. It must exceed the longest
#: time a packet can spend in flight (queueing + path delay + reordering).
DEFAULT_GRACE_S = 30.0
#: REKEY_STATUS `status` value meaning success; failures carry the numeric
#: part of a reason code (404: KEY_ARRAY_MISSING, ...).
STATUS_OK = 0
X25519_SHARE_BYTES = 32
#: An ECP-256 share (FIPS mode, docs/fips.md): the uncompressed X9.62 point, 0x04 ‖ x ‖ y.
ECP256_SHARE_BYTES = 65
#: PFS groups a primary may choose (`pfs_group`); the secondary answers in the group of the share
#: it got, told apart by its length.
PFS_GROUPS = ("x25519", "ecp256")


# --- actions for the dataplane ----------------------------------------------------


@dataclass(frozen=True)
class InstallInboundSa:
    """Action: add an inbound SA (keep the others)."""

    sa: SaKeys


@dataclass(frozen=True)
class InstallOutboundSa:
    """Action: seal everything from now on with *sa*; then call
    `outbound_installed(sa.p3_id, first_seq, now)` on the session."""

    sa: SaKeys


@dataclass(frozen=True)
class RemoveInboundSa:
    """Action: the grace period is over; remove this inbound SA."""

    p3_id: int


@dataclass(frozen=True)
class RekeyCompleted:
    """Event: both sides seal with the new SAs."""

    rekey_id: int
    primary_first_seq: int
    secondary_first_seq: int
    data_index: int | None
    control_index: int | None


@dataclass(frozen=True)
class RekeyFailed:
    """Event: the rekey failed after all retries; the session must recover."""

    reason_code: str
    detail: str


RekeyAction = InstallInboundSa | InstallOutboundSa | RemoveInboundSa | RekeyCompleted | RekeyFailed


# --- helpers shared by both sides --------------------------------------------------


class GraceTimers:
    """Old inbound SAs and control keys waiting for their grace period to end."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, int]] = []
        self._order = 0

    def schedule(self, at_s: float, what: str, value: int) -> None:
        self._order += 1
        heapq.heappush(self._heap, (at_s, self._order, what, value))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[str, int]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, _, what, value = heapq.heappop(self._heap)
            due.append((what, value))
        return due

    def __len__(self) -> int:
        return len(self._heap)


@dataclass(frozen=True)
class _NewKeys:
    primary_to_secondary: bytes  # SA material
    secondary_to_primary: bytes
    control_primary_to_secondary: bytes
    control_secondary_to_primary: bytes


def _mix_pfs(material: bytes, shared_secret: bytes | None, label: bytes, rekey_id: int) -> bytes:
    if shared_secret is None:
        return material
    return prf_plus(prf_hmac_sha256, shared_secret, b"P3 pfs " + label + struct.pack("!I", rekey_id) + material, len(material))


def _split_keys(data: bytes, control: bytes, sa_bytes: int) -> _NewKeys:
    return _NewKeys(data[:sa_bytes], data[sa_bytes:], control[:CONTROL_KEY_BYTES], control[CONTROL_KEY_BYTES:])


PfsPrivateKey = X25519PrivateKey | ec.EllipticCurvePrivateKey


def _ephemeral_private_key(source: KeySource, group: str = "x25519") -> PfsPrivateKey:
    # The key source makes the ephemeral secret too, so a hardware source
    # (key_generation = 2) covers every secret a rekey uses.
    if group == "ecp256":
        # FIPS 186-5 A.2.1: 64 extra bits of randomness, reduced into [1, n-1].
        order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
        secret = int.from_bytes(source.random_bytes(40), "big") % (order - 1) + 1
        return ec.derive_private_key(secret, ec.SECP256R1())
    return X25519PrivateKey.from_private_bytes(source.random_bytes(X25519_SHARE_BYTES))


def _public_bytes(private: PfsPrivateKey) -> bytes:
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _share_group(share: bytes) -> str:
    if len(share) == X25519_SHARE_BYTES:
        return "x25519"
    if len(share) == ECP256_SHARE_BYTES:
        return "ecp256"
    raise P3Error("CTL_MALFORMED", f"a PFS share of {len(share)} octets (X25519: 32, ECP-256: 65)")


def _shared_secret(private: PfsPrivateKey, peer_share: bytes) -> bytes:
    group = _share_group(peer_share)
    try:
        if isinstance(private, ec.EllipticCurvePrivateKey):
            if group != "ecp256":
                raise ValueError("an X25519 share answers an ECP-256 one")
            point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), peer_share)
            return private.exchange(ec.ECDH(), point)
        if group != "x25519":
            raise ValueError("an ECP-256 share answers an X25519 one")
        return private.exchange(X25519PublicKey.from_public_bytes(peer_share))
    except ValueError as error:
        # RFC 7748 §6.1: an all-zero X25519 secret (low-order point) is refused; so is an ECP point
        # off the curve (SP 800-56A 5.6.2.3).
        raise P3Error("CTL_MALFORMED", f"the peer's PFS share is refused: {error}") from None


def control_epoch(rekey_id: int) -> int:
    """The control-key epoch a rekey installs (epoch 0 = keys of the handshake)."""
    return rekey_id & 0xFFFF


# --- the primary -------------------------------------------------------------------


class PrimaryState(Enum):
    IDLE = "idle"
    AWAIT_STATUS = "await_status"
    AWAIT_INSTALL = "await_install"
    AWAIT_SWITCH_ACK = "await_switch_ack"
    FAILED = "failed"


@dataclass
class _Attempt:
    rekey_id: int
    request: ControlMessage
    new_inbound_id: int
    data_material: bytes  # as delivered (before PFS mixing)
    control_material: bytes
    data_index: int | None
    control_index: int | None
    pfs_private: PfsPrivateKey | None
    outbound_id: int = 0
    first_seq: int = 0
    switch_request: ControlMessage | None = None


@dataclass
class RekeyStats:
    completed: int = 0
    attempts: int = 0
    rejected_attempts: int = 0
    index_rekeys: list[tuple[float, str, int]] = field(default_factory=list)


class PrimaryRekey:
    def __init__(
        self,
        channel: ControlChannel,
        cipher: str,
        key_source: KeySource,
        inbound_ids: IdSource,
        current_inbound_id: int,
        now: float,
        rekey_wait_s: float = DEFAULT_REKEY_WAIT_S,
        grace_s: float = DEFAULT_GRACE_S,
        pfs: bool = False,
        data_schedule: ArraySchedule | None = None,
        control_schedule: ArraySchedule | None = None,
        pfs_group: str = "x25519",
    ) -> None:
        if pfs_group not in PFS_GROUPS:
            raise P3Error("CONFIG_VALUE_OUT_OF_RANGE", f"PFS group {pfs_group!r}: choose from {PFS_GROUPS}")
        self.pfs_group = pfs_group
        self.channel = channel
        self.cipher = cipher
        self.key_source = key_source
        self.inbound_ids = inbound_ids
        self.current_inbound_id = current_inbound_id
        self.rekey_wait_s = rekey_wait_s
        self.grace_s = grace_s
        self.pfs = pfs
        self.data_schedule = data_schedule or ArraySchedule(ArrayKind.DATA, float("inf"))
        self.control_schedule = control_schedule or ArraySchedule(ArrayKind.CONTROL, float("inf"))
        self.state = PrimaryState.IDLE
        self.next_rekey_s = now + rekey_wait_s
        self.stats = RekeyStats()
        self._next_rekey_id = 1
        self._failed_attempts = 0
        self._attempt: _Attempt | None = None
        self._current_in_epoch = 0
        self._grace = GraceTimers()
        self._actions: list[RekeyAction] = []

    def events(self) -> list[RekeyAction]:
        out, self._actions = self._actions, []
        return out

    @property
    def busy(self) -> bool:
        return self.state not in (PrimaryState.IDLE, PrimaryState.FAILED)

    # --- starting ----------------------------------------------------------------

    def start(self, now: float) -> bool:
        """Rekey now (on demand, spec §2.1.1.1 "force rekeying"). False if one
        is already running (it will be the one that completes) or failed."""
        if self.busy or self.state is PrimaryState.FAILED:
            return False
        self._failed_attempts = 0
        self._try_send_rekey(now)
        return True

    def _try_send_rekey(self, now: float) -> None:
        try:
            self._send_rekey(now)
        except P3Error as error:
            # The key source failed (P3-E407) or the IDs ran out: no rekey is
            # possible, and keys must not stay in use forever — recover.
            self._fail(f"cannot start a rekey: {error.message()}", error.code)

    def _deliver(self, schedule: ArraySchedule, length: int, now: float) -> tuple[dict[str, FieldValue], bytes, int | None]:
        prefix = "data" if schedule.kind is ArrayKind.DATA else "control"
        if schedule.due(now):
            assert schedule.array is not None
            index = schedule.take_index(now)
            nonce = self.key_source.random_bytes(ARRAY_NONCE_BYTES)
            material = schedule.array.derive(index, nonce, length)
            self.stats.index_rekeys.append((now, prefix, index))
            fields: dict[str, FieldValue] = {
                f"{prefix}_array_generation": schedule.array.generation,
                f"{prefix}_index": index,
                f"{prefix}_nonce": nonce,
            }
            return fields, material, index
        material = self.key_source.random_bytes(length)
        return {f"{prefix}_material": material}, material, None

    def _send_rekey(self, now: float) -> None:
        rekey_id = self._next_rekey_id
        self._next_rekey_id += 1
        new_inbound_id = self.inbound_ids.allocate()
        sa_bytes = material_length(self.cipher)
        data_fields, data_material, data_index = self._deliver(self.data_schedule, 2 * sa_bytes, now)
        control_fields, control_material, control_index = self._deliver(self.control_schedule, 2 * CONTROL_KEY_BYTES, now)
        fields: dict[str, FieldValue] = {"rekey_id": rekey_id, "new_inbound_id": new_inbound_id, **data_fields, **control_fields}
        private = None
        if self.pfs:
            private = _ephemeral_private_key(self.key_source, self.pfs_group)
            fields["pfs_share"] = _public_bytes(private)
        request = self.channel.send_request(MsgType.REKEY, fields, now)
        self._attempt = _Attempt(
            rekey_id, request, new_inbound_id, data_material, control_material, data_index, control_index, private,
        )
        self.stats.attempts += 1
        self.state = PrimaryState.AWAIT_STATUS

    # --- answers -------------------------------------------------------------------

    def on_response(self, request: ControlMessage, response: ControlMessage, now: float) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        if self.state is PrimaryState.AWAIT_STATUS and request.msg_id == attempt.request.msg_id:
            self._on_status(attempt, response, now)
        elif (
            self.state is PrimaryState.AWAIT_SWITCH_ACK
            and attempt.switch_request is not None
            and request.msg_id == attempt.switch_request.msg_id
        ):
            self._on_switch_ack(attempt, response, now)

    def _on_status(self, attempt: _Attempt, response: ControlMessage, now: float) -> None:
        try:
            if response.msg_type is not MsgType.REKEY_STATUS or response.get("rekey_id") != attempt.rekey_id:
                raise P3Error("CTL_UNEXPECTED", f"{response.msg_type.name} does not answer REKEY {attempt.rekey_id}")
            status = response.int_field("status")
            if status != STATUS_OK:
                raise P3Error("REKEY_REJECTED", f"secondary refused rekey {attempt.rekey_id} with P3-E{status:03d}")
            peer_inbound_id = response.get("new_inbound_id")
            if not isinstance(peer_inbound_id, int) or peer_inbound_id == 0:
                raise P3Error("CTL_MALFORMED", "REKEY_STATUS success without the secondary's new inbound P3 ID")
            shared = None
            if attempt.pfs_private is not None:
                share = response.bytes_field("pfs_share")
                if share is None:
                    raise P3Error("REKEY_REJECTED", "secondary answered a PFS rekey without its share")
                shared = _shared_secret(attempt.pfs_private, share)
            keys = _split_keys(
                _mix_pfs(attempt.data_material, shared, b"data", attempt.rekey_id),
                _mix_pfs(attempt.control_material, shared, b"control", attempt.rekey_id),
                material_length(self.cipher),
            )
            outbound = SaKeys.from_material(peer_inbound_id, self.cipher, keys.primary_to_secondary)
            inbound = SaKeys.from_material(attempt.new_inbound_id, self.cipher, keys.secondary_to_primary)
        except P3Error as error:
            self._attempt_failed(error, now)
            return
        attempt.outbound_id = peer_inbound_id
        # Inbound first: the secondary may switch as soon as it sees SWITCH.
        self._actions.append(InstallInboundSa(inbound))
        self.channel.add_in_key(keys.control_secondary_to_primary, control_epoch(attempt.rekey_id))
        self.channel.switch_out_key(keys.control_primary_to_secondary, control_epoch(attempt.rekey_id))
        self.state = PrimaryState.AWAIT_INSTALL
        self._actions.append(InstallOutboundSa(outbound))

    def outbound_installed(self, p3_id: int, first_seq: int, now: float) -> None:
        attempt = self._attempt
        if self.state is not PrimaryState.AWAIT_INSTALL or attempt is None or p3_id != attempt.outbound_id:
            return
        attempt.first_seq = first_seq
        attempt.switch_request = self.channel.send_request(
            MsgType.SWITCH, {"rekey_id": attempt.rekey_id, "first_seq": first_seq}, now,
        )
        self.state = PrimaryState.AWAIT_SWITCH_ACK

    def _on_switch_ack(self, attempt: _Attempt, response: ControlMessage, now: float) -> None:
        if response.msg_type is not MsgType.SWITCH_ACK or response.get("rekey_id") != attempt.rekey_id:
            self._fail(f"{response.msg_type.name} does not answer SWITCH {attempt.rekey_id}")
            return
        # The secondary seals with the new SA from its first_seq on; packets
        # sealed before may still be in flight: keep the old SA for grace_s.
        self._grace.schedule(now + self.grace_s, "sa", self.current_inbound_id)
        self._grace.schedule(now + self.grace_s, "control", self._current_in_epoch)
        self._current_in_epoch = control_epoch(attempt.rekey_id)
        self.current_inbound_id = attempt.new_inbound_id
        self.stats.completed += 1
        self._actions.append(RekeyCompleted(
            attempt.rekey_id, attempt.first_seq, response.int_field("first_seq"), attempt.data_index, attempt.control_index,
        ))
        self._attempt = None
        self.state = PrimaryState.IDLE
        self.next_rekey_s = now + self.rekey_wait_s

    def _attempt_failed(self, error: P3Error, now: float) -> None:
        """A REKEY answered with a failure: spec §2.1.6, try again up to four times."""
        self.stats.rejected_attempts += 1
        self._failed_attempts += 1
        if self._failed_attempts > REKEY_MAX_RETRIES:
            self._fail(f"rekey refused {self._failed_attempts} times, last: {error.message()}")
            return
        self._try_send_rekey(now)

    def on_request_failed(self, request: ControlMessage, attempts: int, now: float) -> None:
        attempt = self._attempt
        if attempt is None:
            return
        ours = {attempt.request.msg_id}
        if attempt.switch_request is not None:
            ours.add(attempt.switch_request.msg_id)
        if request.msg_id not in ours:
            return
        self._fail(f"{request.msg_type.name} of rekey {attempt.rekey_id} unanswered after {attempts - 1} retries")

    def _fail(self, detail: str, reason_code: str = "P3-E402") -> None:
        self.state = PrimaryState.FAILED
        self._attempt = None
        self._actions.append(RekeyFailed(reason_code, detail))

    # --- time ------------------------------------------------------------------------

    def change_rekey_wait(self, rekey_wait_s: float, now: float) -> None:
        """The configuration's rekey_wait changed: the next rekey is due no later than *now* plus it."""
        self.rekey_wait_s = rekey_wait_s
        self.next_rekey_s = min(self.next_rekey_s, now + rekey_wait_s)

    def get_timer(self) -> float | None:
        deadlines = [d for d in (self._grace.next_deadline(),) if d is not None]
        if self.state is PrimaryState.IDLE:
            deadlines.append(self.next_rekey_s)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for what, value in self._grace.pop_due(now):
            if what == "sa":
                self._actions.append(RemoveInboundSa(value))
            else:
                self.channel.remove_in_key(value)
        if self.state is PrimaryState.IDLE and now >= self.next_rekey_s:
            self.start(now)


# --- the secondary -------------------------------------------------------------------


@dataclass
class _Pending:
    rekey_id: int
    inbound_id: int
    outbound: SaKeys
    control_out_key: bytes
    switch_request: ControlMessage | None = None


class SecondaryRekey:
    def __init__(
        self,
        channel: ControlChannel,
        cipher: str,
        key_source: KeySource,
        inbound_ids: IdSource,
        current_inbound_id: int,
        arrays: KeyArrayStore,
        grace_s: float = DEFAULT_GRACE_S,
    ) -> None:
        self.channel = channel
        self.cipher = cipher
        self.key_source = key_source
        self.inbound_ids = inbound_ids
        self.current_inbound_id = current_inbound_id
        self.arrays = arrays
        self.grace_s = grace_s
        self.completed = 0
        self.refused = 0
        self._current_epoch = 0
        self._pending: _Pending | None = None
        self._grace = GraceTimers()
        self._actions: list[RekeyAction] = []

    def events(self) -> list[RekeyAction]:
        out, self._actions = self._actions, []
        return out

    def _material(self, message: ControlMessage, kind: ArrayKind, length: int) -> bytes:
        prefix = "data" if kind is ArrayKind.DATA else "control"
        material = message.bytes_field(f"{prefix}_material")
        by_index = [message.get(f"{prefix}_array_generation"), message.get(f"{prefix}_index"), message.get(f"{prefix}_nonce")]
        if material is not None and by_index == [None, None, None]:
            if len(material) != length:
                raise P3Error("CTL_MALFORMED", f"REKEY {prefix} material is {len(material)} octets, {self.cipher} needs {length}")
            return material
        if material is None and None not in by_index:
            generation, index, nonce = by_index
            assert isinstance(generation, int) and isinstance(index, int) and isinstance(nonce, bytes)
            return self.arrays.lookup(kind, generation).derive(index, nonce, length)
        raise P3Error("CTL_MALFORMED", f"REKEY must carry {prefix} keys or a complete {prefix} key-array reference")

    def on_rekey(self, message: ControlMessage, now: float) -> None:
        rekey_id = message.int_field("rekey_id")
        if self._pending is not None and self._pending.switch_request is None:
            # The primary gave up on that attempt: retire what it installed.
            self._grace.schedule(now + self.grace_s, "sa", self._pending.inbound_id)
            self._grace.schedule(now + self.grace_s, "control", control_epoch(self._pending.rekey_id))
            self._pending = None
        try:
            sa_bytes = material_length(self.cipher)
            data = self._material(message, ArrayKind.DATA, 2 * sa_bytes)
            control = self._material(message, ArrayKind.CONTROL, 2 * CONTROL_KEY_BYTES)
            shared = None
            fields: dict[str, FieldValue] = {"rekey_id": rekey_id, "status": STATUS_OK}
            share = message.bytes_field("pfs_share")
            if share is not None:
                private = _ephemeral_private_key(self.key_source, _share_group(share))
                shared = _shared_secret(private, share)
                fields["pfs_share"] = _public_bytes(private)
            keys = _split_keys(
                _mix_pfs(data, shared, b"data", rekey_id), _mix_pfs(control, shared, b"control", rekey_id), sa_bytes,
            )
            peer_inbound_id = message.int_field("new_inbound_id")
            outbound = SaKeys.from_material(peer_inbound_id, self.cipher, keys.secondary_to_primary)
            inbound_id = self.inbound_ids.allocate()
            inbound = SaKeys.from_material(inbound_id, self.cipher, keys.primary_to_secondary)
        except P3Error as error:
            self.refused += 1
            self.channel.send_response(message, MsgType.REKEY_STATUS, {
                "rekey_id": rekey_id, "status": int(error.code.removeprefix("P3-E")),
            })
            return
        # Install before answering: the primary switches as soon as it reads the answer.
        self._actions.append(InstallInboundSa(inbound))
        self.channel.add_in_key(keys.control_primary_to_secondary, control_epoch(rekey_id))
        self._pending = _Pending(rekey_id, inbound_id, outbound, keys.control_secondary_to_primary)
        fields["new_inbound_id"] = inbound_id
        self.channel.send_response(message, MsgType.REKEY_STATUS, fields)

    def on_switch(self, message: ControlMessage, now: float) -> None:
        pending = self._pending
        rekey_id = message.int_field("rekey_id")
        if pending is None or pending.rekey_id != rekey_id or pending.switch_request is not None:
            self.channel.send_response(message, MsgType.ERROR, {
                "reason": 406, "detail": f"SWITCH for rekey {rekey_id}, which is not pending",
            })
            return
        pending.switch_request = message
        # The primary sealed its last old-SA packet before this SWITCH; keep
        # the old inbound SA and control key for the grace period.
        self._grace.schedule(now + self.grace_s, "sa", self.current_inbound_id)
        self._grace.schedule(now + self.grace_s, "control", self._current_epoch)
        self.current_inbound_id = pending.inbound_id
        self._current_epoch = control_epoch(rekey_id)
        self.channel.switch_out_key(pending.control_out_key, control_epoch(rekey_id))
        self._actions.append(InstallOutboundSa(pending.outbound))

    def outbound_installed(self, p3_id: int, first_seq: int, now: float) -> None:
        pending = self._pending
        if pending is None or pending.switch_request is None or p3_id != pending.outbound.p3_id:
            return
        self.channel.send_response(pending.switch_request, MsgType.SWITCH_ACK, {
            "rekey_id": pending.rekey_id, "first_seq": first_seq,
        })
        self.completed += 1
        self._pending = None

    def get_timer(self) -> float | None:
        return self._grace.next_deadline()

    def handle_timer(self, now: float) -> None:
        for what, value in self._grace.pop_due(now):
            if what == "sa":
                self._actions.append(RemoveInboundSa(value))
            else:
                self.channel.remove_in_key(value)

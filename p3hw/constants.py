"""The protocol's numbers, in one place.

Specification constants carry the section of spec/p3-functional-spec.txt
they come from; implementation constants are our choices (docs/ explain why).
"""

from __future__ import annotations

# --- Specification constants ------------------------------------------------

#: Appendix A 1 `port`: where secondaries connect to the primary.
DEFAULT_PORT = 5653
#: Appendix A 1 `rekey_wait`: seconds between rekeys.
DEFAULT_REKEY_WAIT_S = 3600
#: Appendix A 1 `array_size`: keys in a key array.
DEFAULT_ARRAY_SIZE = 256
#: Appendix A 1 `data_array_time`: seconds between using a data key-array index.
DEFAULT_DATA_ARRAY_TIME_S = 86400
#: Appendix A 1 `control_array_time`: seconds between using a control key-array index.
DEFAULT_CONTROL_ARRAY_TIME_S = 82800
#: Appendix A 1 `heartbeat_time`: idle seconds before a heartbeat is sent.
DEFAULT_HEARTBEAT_TIME_S = 15
#: Appendix A 1 `heartbeat_fail`: seconds without an answer before the peer is lost.
DEFAULT_HEARTBEAT_FAIL_S = 120
#: §2.1.6: a failed rekey step is attempted again up to four times.
REKEY_MAX_RETRIES = 4
#: §2.1.7 2): first reconnect wait, the step added per failure, and the cap.
RECONNECT_FIRST_WAIT_S = 5
RECONNECT_STEP_S = 5
RECONNECT_MAX_WAIT_S = 60
#: §2.1.4: the outer IP protocol of P3 packets (ESP).
IP_PROTO_ESP = 50

# --- Implementation constants -----------------------------------------------

#: RFC 3948: the non-ESP marker that puts IKE on the same UDP port.
NON_ESP_MARKER = b"\x00\x00\x00\x00"
#: docs/protocol.md §6, p3hw/protocol/liveness.py: a peer that stays silent while this side
#: sends it data is probed at once and declared lost (P3-E505) when nothing comes back for
#: the probe deadline, instead of heartbeat_fail (120 s by default, 135 s of silence in
#: all). Every second of that wait is data sealed into a session the peer may already have
#: dropped. The deadline must still ride out what a healthy WAN does: a loss burst, a
#: route or LTE cell change, a busy peer -- a few seconds -- so it is at least 10 s, and
#: at least 3 heartbeat round trips on a slow path (satellite: 600 ms, 1.8 s). Five probes
#: in that time (one every 2 s) all fail on a live path with 20 % loss each way only once
#: in about 160 tries. It is never longer than heartbeat_fail. With the defaults a silent
#: peer that is sent traffic is lost 15 + 10 = 25 s after it was last heard, not 135 s;
#: an idle link keeps the spec's timers.
SILENT_PEER_DEADLINE_MIN_S = 10.0
SILENT_PEER_RTT_FACTOR = 3
SILENT_PEER_PROBES = 5
#: The control loop reads the per-peer packet counters for liveness this often (docs/runtime.md
#: "Liveness feed"): well under the probe deadline and heartbeat_time, and no work per packet.
TRAFFIC_POLL_S = 0.5

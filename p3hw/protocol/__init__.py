"""Sans-I/O protocol machines: handshake, control, rekey, liveness, recovery."""

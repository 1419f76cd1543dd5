"""Byte formats as pure functions: P3 packet, IKEv2 messages, control messages."""

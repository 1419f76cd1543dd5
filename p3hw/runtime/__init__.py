"""asyncio daemons: primary, secondary, per-peer session, timers, syslog."""

"""Software stand-ins for target hardware, used by tests, demo and bench; installed as p3hw.simulators."""

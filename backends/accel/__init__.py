"""The accelerator simulator's device and driver (backends/accel/accel.c).

A software crypto device behind descriptor rings in shared memory, served by
its own thread; it is compiled into ``p3hw._dataplane`` and chosen with
``Dataplane.set_engine("accel-sim", ...)``. The Python side of the simulator
(fault plans, the stream harness) is ``simulators/accelerator``.
"""

from __future__ import annotations

NAME = "accel-sim"

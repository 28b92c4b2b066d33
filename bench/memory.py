"""Peak memory of a block of work, counted by torch's allocator rather than read from the process's resident set.

A resident-set peak depends on the process's history: memory freed earlier but kept by the C allocator serves
new tensors without the resident set growing, so a block can look free (issue 20). The allocator's own events
count what the block itself allocates.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.profiler import ProfilerActivity, profile


@contextlib.contextmanager
def cpu_allocation_peak() -> Iterator[dict[str, int]]:
    """Yields a dict that gets ``peak_bytes``: the most torch's CPU allocator held at once above what it held when
    the block started.

    Counted from the allocation (+bytes) and free (-bytes) events the profiler records with ``profile_memory``.
    """
    result: dict[str, int] = {}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield result
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    result["peak_bytes"] = peak

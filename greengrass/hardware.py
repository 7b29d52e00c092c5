"""What the device is: architecture, cores, memory (sent in Register)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hardware:
    arch: str
    cpu_cores: int
    memory_bytes: int
    accelerator: str = ""


def detect(accelerator: str = "") -> Hardware:
    memory = 0
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return Hardware(
        arch=platform.machine() or "unknown",
        cpu_cores=os.cpu_count() or 1,
        memory_bytes=max(0, memory),
        accelerator=accelerator,
    )

"""Names and addresses the stacks and tests share (the components are in `lab`)."""

from __future__ import annotations

from macvtap_provider.builders.lab_config import default_subnet, host_address
from macvtap_provider.lab import lab_name

__all__ = ["default_subnet", "host_address", "lab_name"]

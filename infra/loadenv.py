"""Environment of systems that load generators and tests drive: every rate limit lifted.

A load generator sends far faster than any app's device, and a test suite registers and
connects hundreds of devices from 127.0.0.1 in seconds; the gateway's limits
(``runtime.config.LimitsConfig``, ``gateway.rate_*``) would shape the traffic they measure or
check. Tests of the limits themselves set their own values on top of this.
"""

from runtime.config import LimitsConfig

LIFTED: str = "1000000"


def lifted_limits() -> dict[str, str]:
    """``COURIER_*`` variables setting every rate and burst to ``LIFTED``."""
    env = {"COURIER_GATEWAY_RATE_PER_S": LIFTED, "COURIER_GATEWAY_RATE_BURST": LIFTED}
    for name in LimitsConfig.__struct_fields__:
        if name.endswith(("_per_s", "_burst")):
            env[f"COURIER_LIMITS_{name.upper()}"] = LIFTED
    return env

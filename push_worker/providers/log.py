"""The development provider: every wake-up becomes one structured log line."""

import msgspec
import structlog

from push_worker.providers.base import Outcome, PushTarget, SendResult
from schemas.push import WakeUp

log = structlog.get_logger(__name__)


class LogProvider:
    """Logs ``push_sent`` with the device and the wake-up; always ``SENT``."""

    name = "log"

    async def send(self, target: PushTarget, wake: WakeUp) -> SendResult:
        log.info("push_sent", provider=self.name, device=target.device, user=target.user,
                 platform=target.platform, wake=msgspec.to_builtins(wake))
        return SendResult(Outcome.SENT)

    async def close(self) -> None:
        """Nothing to release."""

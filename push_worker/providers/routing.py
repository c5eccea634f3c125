"""Which provider serves which platform, as configured (``COURIER_PUSH_PROVIDERS``)."""

from push_worker.providers.base import PushProvider
from push_worker.providers.log import LogProvider
from push_worker.providers.sns import SnsProvider
from push_worker.providers.webhook import WebhookProvider
from runtime.config import PushConfig
from schemas.push import PLATFORMS


class ProviderRouter:
    """platform -> provider; one instance per provider kind."""

    def __init__(self, by_platform: dict[str, PushProvider]) -> None:
        self._by_platform = by_platform

    def for_platform(self, platform: str) -> PushProvider:
        return self._by_platform[platform]

    async def close(self) -> None:
        for provider in {id(p): p for p in self._by_platform.values()}.values():
            await provider.close()


def build_providers(config: PushConfig) -> ProviderRouter:
    """Create the providers the configuration routes to (inside the running event loop).
    The configuration was validated at load: SNS platforms have an application ARN, the
    webhook has a URL and a secret."""
    instances: dict[str, PushProvider] = {}
    by_platform: dict[str, PushProvider] = {}
    for platform in PLATFORMS:
        name = config.providers.get(platform, config.default_provider)
        if name not in instances:
            instances[name] = _create(name, config)
        by_platform[platform] = instances[name]
    return ProviderRouter(by_platform)


def _create(name: str, config: PushConfig) -> PushProvider:
    if name == "sns":
        return SnsProvider.from_config(config)
    if name == "webhook":
        return WebhookProvider(config.webhook_url, config.webhook_secret, config.webhook_timeout_s)
    return LogProvider()

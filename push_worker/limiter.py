"""Per-user push limit: a token bucket per user, with times passed in."""


class UserLimiter:
    """``per_minute`` pushes per user sustained, ``burst`` at once."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, stamp)

    def wait_s(self, user: str, now: float) -> float:
        """0.0 and one push spent if the user may get a push now, else how long until then."""
        tokens, stamp = self._buckets.get(user, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens >= 1.0:
            self._buckets[user] = (tokens - 1.0, now)
            return 0.0
        self._buckets[user] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def prune(self, now: float) -> None:
        """Forget users whose bucket has refilled (they are back to the default)."""
        full = [user for user, (tokens, stamp) in self._buckets.items()
                if tokens + (now - stamp) * self._rate >= self._burst]
        for user in full:
            del self._buckets[user]

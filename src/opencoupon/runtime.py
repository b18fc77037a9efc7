"""What every request, job and command shares: settings, database, keys, limiter."""

from __future__ import annotations

from dataclasses import dataclass, field

from opencoupon.config import Settings
from opencoupon.db.session import Database
from opencoupon.kit.crypto import Keyring
from opencoupon.kit.ratelimit import RateLimiter


@dataclass
class Runtime:
    settings: Settings
    db: Database
    keyring: Keyring
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 0))

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            db=Database(settings.database_url),
            keyring=Keyring(settings.secret_key),
            limiter=RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
        )

    def url(self, path: str) -> str:
        """An absolute URL under OPENCOUPON_BASE_URL."""
        return self.settings.public_base_url + path

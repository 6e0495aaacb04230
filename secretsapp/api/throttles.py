"""Throttles of /api/v1/ (their own module: DRF imports them while loading its views)."""

from __future__ import annotations

import hashlib

from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class WriteRateThrottle(UserRateThrottle):
    """Limits each user's writes (POST/PATCH/PUT/DELETE); reads are not counted."""

    scope = "writes"

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)


class _FailedLoginThrottle(SimpleRateThrottle):
    """Counts only failed sign-ins: the view calls ``record_failure`` when one fails.

    Once the limit is reached every attempt is refused with 429 — the right password
    too — until the window passes, which is what stops password guessing.
    """

    def throttle_success(self) -> bool:
        return True  # checking does not count; only record_failure does

    def record_failure(self) -> None:
        if self.rate is None or self.key is None:
            return
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)


class FailedLoginByAddressThrottle(_FailedLoginThrottle):
    scope = "failed_logins_per_address"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class FailedLoginByUsernameThrottle(_FailedLoginThrottle):
    scope = "failed_logins_per_username"

    def get_cache_key(self, request, view) -> str | None:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username:
            return None
        # Hashed: the cache key must not hold arbitrary client text.
        ident = hashlib.sha256(username.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class WebhookRateThrottle(SimpleRateThrottle):
    """Limits the calls of each webhook (``POST /hooks/<token>/``), whoever makes them:
    the token is the caller. The view finds the webhook first; unknown tokens are 404s
    that cost one indexed lookup and are not counted."""

    scope = "webhooks"

    def get_cache_key(self, request, view) -> str | None:
        webhook = getattr(view, "webhook", None)
        if webhook is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": webhook.pk}

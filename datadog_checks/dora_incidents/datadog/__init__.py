"""One Datadog client, in parts: `keys` (which site and keys), `http` (a thin client with the Agent's proxy and
TLS settings), `outbox` (durable idempotent writes), `pool` (concurrent writes and their rate-limit policy) and
`reads` (lists), joined here as `DatadogApi`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from datadog_checks.base import ConfigurationError

from . import keys
from .client import DatadogHttp
from .outbox import DORA_PATH, Outbox, Write
from .pool import DEFAULT_CONCURRENCY, WritePool
from .reads import DatadogError, DoraLists

__all__ = ['DORA_PATH', 'DatadogApi', 'DatadogError', 'Write', 'datadog_api']

GOV_SITES = ('ddog-gov.com',)  # DORA Metrics does not exist there


class DatadogApi:
    """Writes through the durable outbox and the pool; reads beside them, within the same run."""

    def __init__(
        self,
        check,
        base_url: str,
        api_key: str,
        app_key: str | None = None,
        concurrency: int | None = None,
        http: DatadogHttp | None = None,  # anything with DatadogHttp's `send` (the CLI's dry run records instead)
    ):
        concurrency = max(1, concurrency or check.config.dora_concurrency or DEFAULT_CONCURRENCY)
        self.http = http or DatadogHttp(check, base_url, api_key, app_key, concurrency)
        self.outbox = Outbox(check)
        self.pool = WritePool(check, self.http, self.outbox, concurrency)
        self.lists = DoraLists(self.http, self.pool)
        self.has_app_key = bool(app_key)

    @property
    def pending(self) -> int:
        return len(self.outbox)

    @property
    def rejected(self) -> str | None:
        """Why Datadog refused this run's credentials, if it did."""
        return self.pool.rejected

    def take_dropped(self) -> int:
        return self.outbox.take_dropped()

    def begin(self, deadline: float) -> None:
        self.pool.begin(deadline)

    def send(self, write: Write) -> None:
        self.pool.send(write)

    def save(self) -> None:
        self.pool.save()

    def finish(self) -> None:
        self.pool.finish()

    def query(self, path: str, body: dict) -> dict:
        return self.lists.query(path, body)


def datadog_api(check) -> DatadogApi:
    """The Datadog client for a check's configuration: its URL and keys, or the Agent's site and keys.
    Raises ConfigurationError."""
    url = keys.api_url(check)
    host = urlsplit(url).hostname or ''
    if host.endswith(GOV_SITES):
        raise ConfigurationError(
            f'`send_dora_failures`: DORA Metrics is not available on {host}; '
            'set `send_dora_failures: false` (metrics and events still work)'
        )
    api_key = keys.api_key(check)
    if not api_key:
        raise ConfigurationError(
            '`datadog_api_key`: no Datadog API key for DORA failures; set it, or the Agent `api_key`'
        )
    check.register_secret(api_key)
    app_key = keys.app_key(check)  # for reads and deployment markings; optional
    if app_key:
        check.register_secret(app_key)
    return DatadogApi(check, url, api_key, app_key=app_key)

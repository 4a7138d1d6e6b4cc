"""One run: read the cursor, ask the source what was resolved since, emit it, save the cursor."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from urllib.parse import urlsplit

from datadog_checks.base import AgentCheck, ConfigurationError
from datadog_checks.base.agent import datadog_agent
from datadog_checks.base.utils.persistent_cache import config_set_persistent_cache_id

from .config_models import ConfigMixin
from .cursor import Cursor, CursorStore, Resolution
from .incident import Batch
from .outputs import DoraApi, Outputs
from .sources import SourceError, make_source

# The options that decide *which* incidents are read. Only they scope the cursor, so that editing
# `tags`, the mapping or the interval never resets it.
CURSOR_SCOPE = ('source', 'api_url', 'service_ids', 'team_ids', 'urgencies')
GOV_SITES = ('ddog-gov.com',)


class DoraIncidentsCheck(AgentCheck, ConfigMixin):
    # Metric names are written out in full: `dora.*` like Datadog's own DORA metrics, `dora_incidents.*` for health.
    __NAMESPACE__ = ''

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self.check_initializations.append(self._set_up)

    def persistent_cache_id(self) -> str:
        return config_set_persistent_cache_id(self, instance_config_options=CURSOR_SCOPE)

    def _set_up(self) -> None:
        self.register_secret(self.config.api_token)
        self._source = make_source(self.config, self.http)
        self._cursors = CursorStore(self)
        self._outputs = Outputs(self, self._dora_api())

    def _dora_api(self) -> DoraApi | None:
        if not self.config.send_dora_failures:
            return None
        url = self.config.datadog_api_url or f'https://api.{datadog_agent.get_config("site") or "datadoghq.com"}'
        host = urlsplit(url).hostname
        if host.endswith(GOV_SITES):
            raise ConfigurationError(
                f'`send_dora_failures`: DORA Metrics is not available on {host}; '
                'set `send_dora_failures: false` (metrics and events still work)'
            )
        api_key = self.config.datadog_api_key or datadog_agent.get_config('api_key')
        if not api_key:
            raise ConfigurationError(
                '`datadog_api_key`: no Datadog API key for DORA failures; set it, or the Agent `api_key`'
            )
        self.register_secret(api_key)
        return DoraApi(self, url, api_key)

    def check(self, _):
        deadline = time.monotonic() + self.config.max_run_time
        now = datetime.now(timezone.utc).replace(microsecond=0)
        cursor = self._cursors.load()
        self._outputs.begin(deadline)
        source_up, skipped = True, 0
        try:
            for batch in self._source.resolved(*cursor.window(now, self.config.initial_lookback), deadline):
                skipped += self._emit(batch, cursor)
                if time.monotonic() >= deadline and cursor.watermark < now:
                    self.warning(
                        'Stopped after `max_run_time` (%ss) with incidents still to read from %s on; '
                        'the next run continues from there',
                        self.config.max_run_time,
                        cursor.watermark.isoformat(),
                    )
                    break
        except SourceError as e:
            source_up = False
            self.warning('Could not read %s: %s', self.config.source, e)
        self._outputs.finish(source_up, cursor.lag(now), skipped)

    def _emit(self, batch: Batch, cursor: Cursor) -> int:
        for incident in batch.incidents:
            resolution = cursor.classify(incident)
            if resolution is not Resolution.SEEN:
                self._outputs.emit(incident, resolution)
                cursor.record(incident)
        # Outputs first, cursor last: dying in between re-sends (idempotently), never skips.
        self._outputs.save()
        cursor.advance(batch.through)
        self._cursors.save(cursor)
        for skipped in batch.skipped:
            self.warning('Skipped malformed %s incident %s: %s', skipped.source, skipped.id, skipped.reason)
        return len(batch.skipped)

"""One run: read the cursor, ask the source what was resolved since, emit it, save the cursor."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from datadog_checks.base import AgentCheck
from datadog_checks.base.utils.persistent_cache import config_set_persistent_cache_id

from .config_models import ConfigMixin
from .cursor import Cursor, CursorStore, Resolution
from .incident import Batch
from .outputs import DoraApi, Outputs, dora_api
from .sources import SourceError, make_source

# The options that decide *which* incidents are read. Only they scope the cursor, so that editing
# `tags`, the mapping or the interval never resets it.
CURSOR_SCOPE = ('source', 'api_url', 'service_ids', 'team_ids', 'urgencies')


class DoraIncidentsCheck(AgentCheck, ConfigMixin):
    # Metric names are written out in full: `dora.*` like Datadog's own DORA metrics, `dora.check.*` for health.
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
        return dora_api(self) if self.config.send_dora_failures else None

    def check(self, _):
        deadline = time.monotonic() + self.config.max_run_time
        now = datetime.now(timezone.utc).replace(microsecond=0)
        cursor = self._cursors.load()
        self._outputs.begin(deadline)
        source_up, skipped = self._catch_up(cursor, now, deadline)
        self._outputs.finish(source_up, cursor.lag(now), skipped)

    def _catch_up(self, cursor: Cursor, now: datetime, deadline: float) -> tuple[bool, int]:
        """Emits the source's batches until caught up with `now` or out of time: (source reachable, skipped)."""
        skipped = 0
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
            self.warning('Could not read %s: %s', self.config.source, e)
            return False, skipped
        return True, skipped

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

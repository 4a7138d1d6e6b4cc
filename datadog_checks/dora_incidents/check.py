"""One run: read the cursor, ask the source what was resolved since, emit it, save the cursor once."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

from datadog_checks.base import AgentCheck, ConfigurationError

from .change_failures import change_failures
from .config_models import ConfigMixin
from .cursor import Cursor, CursorStore
from .datadog import DatadogApi, DatadogError, datadog_api, keys
from .deployments import deployment_counter
from .mapping import Mapper
from .options import reject_unknown
from .outputs import Health, Outputs
from .recovery import recover_reported
from .reporting import Progress, Reporter
from .sources import make_source, scope_filters, source_class


class DoraIncidentsCheck(AgentCheck, ConfigMixin):
    # Metric names are written out in full: `dora.*` like Datadog's own DORA metrics, `dora.check.*` for health.
    __NAMESPACE__ = ''
    # The clock `max_run_time` is measured by; tests replace it on an instance to run on a virtual clock.
    monotonic = staticmethod(time.monotonic)

    def __init__(self, name, init_config, instances):
        super().__init__(name, init_config, instances)
        self.check_initializations.append(self._set_up)

    def warning(self, warning_message, *args, **kwargs):
        # The base class keeps warnings as given, and an API's error body may echo a token or key back.
        super().warning(self.sanitize(warning_message % args if args else warning_message), **kwargs)

    def persistent_cache_id(self) -> str:
        """The cursor's scope: which incidents are read, and which Datadog organisation they are reported to.

        Only these options, normalised: editing `tags`, the mapping or the interval, spelling out a default
        or adding a trailing slash never resets the cursor; two organisations never share one.
        """
        config = self.config
        scope = {
            'source': config.source,
            'api_url': source_class(config.source).canonical_api_url(config.api_url).lower(),
            'filters': scope_filters(config),
            # The instance's own key tells two organisations apart; the Agent's key (rotated with the Agent)
            # is the Agent's organisation, so rotating it keeps the cursor.
            'datadog': [keys.api_url(self).rstrip('/').lower(), _fingerprint(self.config.datadog_api_key)],
        }
        return hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:32]

    def _set_up(self) -> None:
        # Before anything can fail: every message is scrubbed of the options the tool reads with.
        reading_with = ('api_token', *source_class(self.config.source).credentials.secret_options)
        for secret in (getattr(self.config, option) for option in reading_with):
            if secret:
                self.register_secret(secret)
        reject_unknown(self.instance)
        source = make_source(self.config, set(self.instance), self.http, self.monotonic)
        for secret in source.secrets:  # a tool may read with keys other than `api_token` (Datadog's)
            self.register_secret(secret)
        dora = self._dora_api()
        outputs = Outputs(
            self, dora, changes=change_failures(self, dora, source), send_failures=self.sends_dora_failures()
        )
        self._deployments = deployment_counter(self, dora)
        horizon = timedelta(seconds=self.config.initial_lookback)
        self._reporter = Reporter(source, Mapper(self.config), outputs, CursorStore(self), self.warning, horizon)

    def sends_dora_failures(self) -> bool:
        """`send_dora_failures` as set, else the tool's default (off where Datadog reads the tool itself)."""
        if 'send_dora_failures' in self.instance:
            return self.config.send_dora_failures
        return source_class(self.config.source).sends_dora_failures

    def _dora_api(self) -> DatadogApi | None:
        # Marking change failures and counting deployments need the Datadog API even when failures are not sent.
        config = self.config
        wanted = self.sends_dora_failures() or config.mark_change_failures or config.deployment_metrics
        return datadog_api(self) if wanted else None

    def check(self, _):
        deadline = self.monotonic() + self.config.max_run_time
        reporter = self._reporter
        cursor = reporter.store.load()
        reporter.outputs.begin(deadline)
        # Up to the end of the current second (windows are whole seconds): a change made this second is read
        # now; the cursor still never moves past the source's clock (reporting.py).
        now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
        since, until = cursor.window(now, self.config.initial_lookback)
        if cursor.watermark is None:
            self._recover(cursor, since, until)
        if self._deployments is not None:
            # Before the backlog, which may spend the run's budget: one list request in steady state.
            self._deployments.run()
        progress = reporter.catch_up(cursor, since, until, deadline)
        # Once, now that the run's emission is complete: the Agent commits this run's metrics when it returns.
        reporter.commit(cursor)
        if self._deployments is not None:
            self._deployments.save()
        self._report(progress, cursor.lag(reporter.source.clock()))

    def _recover(self, cursor: Cursor, since: datetime, until: datetime) -> None:
        """No cursor (first run, a cluster check re-dispatched to another node): what Datadog already holds from
        this instance counts as reported. Needs the application key; without one the lookback is re-counted."""
        api = self._reporter.outputs.dora
        if api is None or not api.has_app_key:
            return
        try:
            cursor.adopt(recover_reported(api, self.config.source, None, since, until))
        except DatadogError as e:
            self.warning('Could not list the DORA failures already sent (%s): the lookback may be counted again', e)

    def _report(self, progress: Progress, lag: float | None) -> None:
        outputs = self._reporter.outputs
        health = Health(progress.source_error is None, lag, self._reporter.store.save_failed, progress.skipped)
        outputs.finish(health)
        if progress.out_of_time:
            self.warning(
                'Stopped after `max_run_time` (%ss) with incidents still to read; the next run continues from there',
                self.config.max_run_time,
            )
        # A refused credential will not pass by itself: an error in `datadog-agent status`, not a warning.
        if progress.credentials_rejected:
            raise ConfigurationError(f'{self._reporter.source.display_name}: {progress.source_error}')
        if outputs.rejected:
            raise ConfigurationError(outputs.rejected)
        if progress.source_error:
            self.warning('Could not read %s: %s', self._reporter.source.display_name, progress.source_error)


def _fingerprint(secret: str | None) -> str | None:
    """Tells two keys apart without storing either."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else None

"""Deployment frequency where Datadog's own `dora.deployments.count` is missing (`deployment_metrics`).

Each run lists the DORA deployments that started since shortly before the last run and emits
`<namespace>.deployments.count` once for each one not counted before. What was counted is remembered in the
Agent's persistent cache (the deployments that may still be listed, by id), saved before the run returns, like
the cursor: exactly once across runs and restarts. The very first run (or one that lost its state: a cluster
check on another node) counts nothing and remembers what it found: a deployment is skipped rather than
counted twice.

The list filters on a deployment's start: MARGIN covers a deployment still running at the last run and one
that reached Datadog late. In steady state that is one list request per run (up to 1,000 deployments in
MARGIN plus an interval); more pages past that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from datadog_checks.base import ConfigurationError

from .change_failures import DEPLOYMENTS_PATH, Deployment
from .datadog import DatadogApi, DatadogError, keys
from .datadog.reads import LIST_LIMIT
from .durable import DurableJson, LostWrite

STATE_KEY = 'deployments'
DEPLOYMENTS_COUNT = 'deployments.count'
MARGIN = timedelta(hours=2)


class DeploymentCounter:
    def __init__(
        self, check, api: DatadogApi, namespace: str, tags: list[str], clock: Callable[[], datetime] | None = None
    ):
        self._check = check
        self._api = api
        self._metric = f'{namespace}.{DEPLOYMENTS_COUNT}'
        self._tags = tags
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._store = DurableJson(check, STATE_KEY, _from_document, _to_document)
        self._state: _State | None = None  # None: no state yet

    def run(self) -> int:
        """Count the deployments new since the last run; returns how many. Failures are warnings: the next run
        lists the same stretch again."""
        state = self._load()
        now = self._clock()
        since = (state.through if state else now) - MARGIN
        try:
            items, complete = self._api.lists.list_events(
                DEPLOYMENTS_PATH, 'dora_deployments_list_request', '', since, now, limit=LIST_LIMIT
            )
        except DatadogError as e:
            self._check.warning('Could not list the DORA deployments to count them; the next run retries: %s', e)
            return 0
        if not complete:
            self._check.warning(
                'More than %d DORA deployments since %s: the oldest were not counted', len(items), since
            )
        counted = 0
        seen = dict(state.seen) if state else {}
        for deployment in filter(None, map(Deployment.from_listed, items)):
            if state is not None and deployment.id not in seen:
                self._check.count(self._metric, 1, tags=deployment.tags() + self._tags)
                counted += 1
            seen[deployment.id] = _ms(deployment.started_at)
        # Remembered: only what the next run's list can still answer, a deployment started within MARGIN of now.
        horizon = _ms(now - MARGIN)
        self._state = _State(now, {key: started for key, started in seen.items() if started >= horizon})
        return counted

    def save(self) -> None:
        """With the cursor, once the run's emission is complete: a run killed before its metrics were committed
        counts its deployments again next run rather than never."""
        if self._state is None:
            return
        try:
            self._store.save(self._state)
        except LostWrite as e:
            self._check.log.warning('The deployments counted could not be saved in the persistent cache: %s', e)

    def _load(self) -> _State | None:
        if self._state is None:
            try:
                self._state = self._store.load()
            except (RuntimeError, ValueError) as e:
                self._check.warning('The deployments counted could not be read; counting starts afresh: %s', e)
        return self._state


@dataclass(frozen=True)
class _State:
    through: datetime  # when the last list was answered
    seen: dict[str, int]  # deployment id -> its start, epoch ms: those counted that a next list may answer again


def deployment_counter(check, api: DatadogApi | None) -> DeploymentCounter | None:
    """The counter for a check's configuration, None when `deployment_metrics` is off. Raises ConfigurationError."""
    config = check.config
    if not config.deployment_metrics:
        return None
    if api is None or not keys.app_key(check):
        raise ConfigurationError(
            '`datadog_app_key`: `deployment_metrics` lists deployments in Datadog, which needs an application key; '
            'set it, or the Agent `app_key`'
        )
    return DeploymentCounter(check, api, config.metric_namespace or 'dora', list(config.tags or ()))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _to_document(state: _State) -> dict:
    return {'through': _ms(state.through), 'seen': state.seen}


def _from_document(document: dict) -> _State:
    through, seen = document['through'], document['seen']
    if not isinstance(through, int) or not isinstance(seen, dict) or not all(isinstance(v, int) for v in seen.values()):
        raise ValueError('not a time and a map of deployment ids to epoch milliseconds')
    return _State(datetime.fromtimestamp(through / 1000, timezone.utc), seen)

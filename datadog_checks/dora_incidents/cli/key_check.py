"""The Datadog keys a configuration sends with, asked to Datadog before anything is sent (`dora-incidents check`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..datadog import DatadogError, datadog_api, keys
from ..recovery import recover_reported
from .runtime import CliError

VALIDATE_PATH = '/api/v1/validate'  # Datadog's "is this API key valid"


def validate_keys(check) -> list[str]:
    """One line per key Datadog accepted, or a CliError naming the key it refused or the API it could not reach."""
    config = check.config
    if not (check.sends_dora_failures() or config.mark_change_failures or config.deployment_metrics):
        return [
            'Datadog keys: not used (`send_dora_failures`, `mark_change_failures` and `deployment_metrics` are off)'
        ]
    url = keys.api_url(check)
    api = datadog_api(check)
    answer = api.http.send('GET', VALIDATE_PATH, None)
    if answer.status is None:
        raise CliError(f'cannot reach the Datadog API at {url} to validate the API key ({answer.detail})')
    if answer.status in (401, 403):
        raise CliError(f'`datadog_api_key` (or the Agent api_key): Datadog refused it, HTTP {answer.status}')
    if answer.status != 200:
        raise CliError(f'the Datadog API at {url} answered HTTP {answer.status} to the API key validation')
    lines = [f'Datadog API key: valid ({url})']
    if not keys.app_key(check):
        needed = ' (`mark_change_failures` needs one)' if config.mark_change_failures else ''
        return lines + [f'Datadog application key: none configured{needed}']
    now = datetime.now(timezone.utc)
    try:  # the read the check makes with it: list this source's DORA failures
        recover_reported(api, config.source, None, now - timedelta(minutes=1), now)
    except DatadogError as e:
        raise CliError(check.sanitize(str(e))) from None  # names `datadog_app_key` and the HTTP status
    return lines + ['Datadog application key: valid (it can read DORA failures)']

"""The Datadog keys a configuration sends with, asked to Datadog before anything is sent (`dora-incidents check`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from ..change_failures import datadog_app_key, recover_reported
from ..datadog_api import DatadogError, datadog_http
from ..outputs import datadog_api_key, datadog_api_url, dora_api
from .runtime import CliError

VALIDATE_PATH = '/api/v1/validate'  # Datadog's "is this API key valid"


def validate_keys(check) -> list[str]:
    """One line per key Datadog accepted, or a CliError naming the key it refused or the API it could not reach."""
    config = check.config
    if not (config.send_dora_failures or config.mark_change_failures):
        return ['Datadog keys: not used (`send_dora_failures` and `mark_change_failures` are off)']
    url = datadog_api_url(check)
    try:
        response = datadog_http(check).get(url + VALIDATE_PATH, extra_headers={'DD-API-KEY': datadog_api_key(check)})
    except requests.RequestException as e:
        raise CliError(f'cannot reach the Datadog API at {url} ({type(e).__name__}) to validate the API key') from None
    if response.status_code in (401, 403):
        raise CliError(f'`datadog_api_key` (or the Agent api_key): Datadog refused it, HTTP {response.status_code}')
    if response.status_code != 200:
        raise CliError(f'the Datadog API at {url} answered HTTP {response.status_code} to the API key validation')
    lines = [f'Datadog API key: valid ({url})']
    if not datadog_app_key(check):
        needed = ' (`mark_change_failures` needs one)' if config.mark_change_failures else ''
        return lines + [f'Datadog application key: none configured{needed}']
    now = datetime.now(timezone.utc)
    try:  # the read the check makes with it: list this source's DORA failures
        recover_reported(dora_api(check), config.source, None, now - timedelta(minutes=1), now)
    except DatadogError as e:
        raise CliError(check.sanitize(str(e))) from None  # names `datadog_app_key` and the HTTP status
    return lines + ['Datadog application key: valid (it can read DORA failures)']

"""Which Datadog site and keys an instance talks to: its own options, else the Agent's.

One small public lookup, shared by every part of the check that calls Datadog's API (writes, reads, and a
source that reads Datadog itself).
"""

from __future__ import annotations

from datadog_checks.base.agent import datadog_agent

DEFAULT_SITE = 'datadoghq.com'


def api_url(check) -> str:
    """`datadog_api_url`, else `https://api.<the Agent's site>`."""
    return check.config.datadog_api_url or f'https://api.{datadog_agent.get_config("site") or DEFAULT_SITE}'


def api_key(check) -> str | None:
    """`datadog_api_key`, else the Agent's `api_key`; None when neither is set."""
    return check.config.datadog_api_key or datadog_agent.get_config('api_key') or None


def app_key(check) -> str | None:
    """`datadog_app_key`, else the Agent's `app_key`; None when neither is set."""
    return check.config.datadog_app_key or datadog_agent.get_config('app_key') or None

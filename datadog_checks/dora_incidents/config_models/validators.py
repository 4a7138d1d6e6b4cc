# Hand-written: ddev generates this file only once and never overwrites it.
# Each `instance_<option>` runs on a configured value before pydantic checks its type; a ValueError
# becomes a ConfigurationError naming the option.
import re
from urllib.parse import urlsplit


def _require_http_url(value, option):
    if not isinstance(value, str):
        return value  # pydantic reports the wrong type
    parts = urlsplit(value)
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ValueError(f'`{option}` must be an http(s) URL such as https://api.example.com, got {value!r}')
    return value.rstrip('/')


def instance_api_url(value, **kwargs):
    return _require_http_url(value, 'api_url')


def instance_datadog_api_url(value, **kwargs):
    return _require_http_url(value, 'datadog_api_url')


def instance_api_token(value, **kwargs):
    # The token itself never goes into a message.
    if isinstance(value, str) and not value.strip():
        raise ValueError("`api_token` is empty: set it to a read-only API token of the `source` tool, or remove it")
    return value


def instance_service_mapping(value, **kwargs):
    if not isinstance(value, dict):
        return value
    for key, target in value.items():
        if not isinstance(target, dict):
            raise ValueError(
                f'`service_mapping.{key}` must be a mapping with any of `service`, `team`, `env`, got {target!r}'
            )
        unknown = set(target) - {'service', 'team', 'env'}
        if unknown:
            raise ValueError(
                f'`service_mapping.{key}` has unknown keys {sorted(unknown)}: use `service`, `team`, `env`'
            )
    return value


def instance_metric_namespace(value, **kwargs):
    if isinstance(value, str) and not re.fullmatch(r'[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*', value):
        raise ValueError(f'`metric_namespace` must be a Datadog metric prefix such as dora_incidents, got {value!r}')
    return value

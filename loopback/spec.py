"""Checks requests against PagerDuty's official OpenAPI spec with openapi-core."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from .server import Request

# CI lays `shared/` beside the repository; DORA_PAGERDUTY_SPEC points elsewhere.
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / 'shared' / 'specs' / 'pagerduty-rest-v2.openapi.json'


def spec_path() -> Path:
    path = Path(os.environ.get('DORA_PAGERDUTY_SPEC', DEFAULT_SPEC))
    if not path.is_file():
        raise FileNotFoundError(f'PagerDuty OpenAPI spec not found at {path}: set DORA_PAGERDUTY_SPEC')
    return path


@lru_cache(maxsize=1)
def _openapi():
    from openapi_core import Config, OpenAPI

    # The spec is PagerDuty's own; validating the spec itself only costs time.
    return OpenAPI.from_dict(json.loads(spec_path().read_text()), config=Config(spec_validator_cls=None))


class _SpecRequest:
    """openapi-core's request protocol over a recorded loopback request."""

    def __init__(self, request: Request):
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = 'https://api.pagerduty.com'
        self.path = request.path
        self.full_url_pattern = self.host_url + request.path
        self.method = request.method.lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(request.query),
            header=Headers(list(request.headers.items())),
            cookie=ImmutableMultiDict(),
            path={},
        )
        self.content_type = request.headers.get('content-type', 'application/json')
        self.body = request.body or None


def pagerduty_request_problem(request: Request) -> str | None:
    """Why PagerDuty's spec rejects this request, or None. Also insists on the headers the spec requires."""
    for header, expected in (('accept', 'application/vnd.pagerduty+json;version=2'), ('content-type', 'application/json')):
        if request.headers.get(header) != expected:
            return f'{request.path}: header {header} must be {expected!r}, got {request.headers.get(header)!r}'
    try:
        _openapi().validate_request(_SpecRequest(request))
    except Exception as e:  # openapi-core raises a family of errors; any of them is a violation
        cause = f' ({e.__cause__})' if e.__cause__ else ''
        return f'{request.method} {request.path}: {e}{cause}'
    return None

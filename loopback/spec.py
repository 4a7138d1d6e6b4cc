"""Checks requests (of the check) and answers (of the simulators) against the vendors' API descriptions.

The descriptions are the minimal ones kept in `loopback/specs/<vendor>.json`, derived from each vendor's
published OpenAPI description by `scripts/derive_specs.py`; nothing here reads anything outside the
repository. Validation is openapi-core's, matching on the request path only (the host is the one the
derived description declares, whatever loopback address the request went to).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from .server import Request, Response

SPECS = Path(__file__).resolve().parent / 'specs'


def vendors() -> list[str]:
    """The vendors with a derived description."""
    return sorted(path.stem for path in SPECS.glob('*.json'))


@lru_cache(maxsize=None)
def document(vendor: str) -> dict:
    """The derived description of a vendor's API, as a dict."""
    path = SPECS / f'{vendor}.json'
    if not path.is_file():
        raise FileNotFoundError(f'no API description for {vendor!r} at {path}: run scripts/derive_specs.py')
    return json.loads(path.read_text())


@lru_cache(maxsize=None)
def _openapi(vendor: str):
    from openapi_core import Config, OpenAPI

    # The derived files are validated once by tests/test_specs.py; validating them again only costs time.
    return OpenAPI.from_dict(document(vendor), config=Config(spec_validator_cls=None))


def _host_url(vendor: str) -> str:
    servers = document(vendor).get('servers') or [{'url': 'https://api.invalid'}]
    return servers[0]['url'].rstrip('/')


class _SpecRequest:
    """openapi-core's request protocol over a recorded loopback request."""

    def __init__(self, vendor: str, request: Request):
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = _host_url(vendor)
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


class _SpecResponse:
    """openapi-core's response protocol over a simulator's answer."""

    def __init__(self, response: Response):
        from werkzeug.datastructures import Headers

        self.status_code = response.status
        self.headers = Headers([(str(name), str(value)) for name, value in response.headers.items()])
        self.content_type = self.headers.get('content-type', '')
        self.data = response.body


def _explain(error: Exception) -> str:
    """openapi-core's error in one line: its kind and the most specific schema errors behind it."""
    cause = error.__cause__
    details = getattr(cause, 'schema_errors', None) or getattr(error, 'schema_errors', None)
    if not details:
        return f'{error} ({cause})' if cause is not None and str(cause) not in str(error) else str(error)
    # A oneOf/anyOf failure nests one error per alternative: the deepest ones say what is actually wrong.
    leaves = {}
    for leaf in _leaves(details):
        where = '/'.join(str(part) for part in leaf.absolute_path) or '<root>'
        leaves.setdefault((where, leaf.message), len(leaf.absolute_path))
    ranked = sorted(leaves, key=lambda key: -leaves[key])
    shown = '; '.join(f'{where}: {_short(message)}' for where, message in ranked[:3])
    more = f'; and {len(ranked) - 3} more' if len(ranked) > 3 else ''
    # The error's own text names the parameter; for a body it repeats the whole value instead.
    head = str(error) if len(str(error)) <= 120 else type(error).__name__
    return f'{head}: {shown}{more}'


def _leaves(errors):
    for error in errors:
        if getattr(error, 'context', None):
            yield from _leaves(error.context)
        else:
            yield error


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + '...'


def request_problem(vendor: str, request: Request) -> str | None:
    """Why the vendor's API description rejects this request, or None."""
    try:
        _openapi(vendor).validate_request(_SpecRequest(vendor, request))
    except Exception as e:  # openapi-core raises a family of errors; any of them is a violation
        return f'{vendor}: {request.method} {request.path}: {_explain(e)}'
    return None


def response_problem(vendor: str, request: Request, response: Response) -> str | None:
    """Why the vendor's API description rejects this answer (status, headers, body) to this request, or None."""
    try:
        _openapi(vendor).validate_response(_SpecRequest(vendor, request), _SpecResponse(response))
    except Exception as e:  # openapi-core raises a family of errors; any of them is a violation
        return f'{vendor}: {request.method} {request.path} -> {response.status}: {_explain(e)}'
    return None


def documented(vendor: str, request: Request) -> set[str]:
    """The statuses the description declares for this request's operation (its path, below the server's base
    path such as Statuspage's `/v1`, matched to a template)."""
    path = request.path.removeprefix(urlsplit(_host_url(vendor)).path)
    for template, operations in document(vendor).get('paths', {}).items():
        if re.fullmatch(re.sub(r'\\{[^/]+?\\}', '[^/]+', re.escape(template)), path):
            return set(operations.get(request.method.lower(), {}).get('responses', {}))
    return set()


PAGERDUTY_HEADERS = (('accept', 'application/vnd.pagerduty+json;version=2'), ('content-type', 'application/json'))


def pagerduty_request_problem(request: Request) -> str | None:
    """Why PagerDuty's description rejects this request, or None. Also insists on the headers it requires."""
    for header, expected in PAGERDUTY_HEADERS:
        if request.headers.get(header) != expected:
            return f'{request.path}: header {header} must be {expected!r}, got {request.headers.get(header)!r}'
    problem = request_problem('pagerduty', request)
    # Same wording as before the vendor argument existed: the method and path first.
    return problem.removeprefix('pagerduty: ') if problem else None

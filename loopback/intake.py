"""A loopback Datadog API that records the DORA failures it receives and checks each one.

Each body is validated with `datadog-api-client`'s `DORAFailureRequest` model, plus the rules of the
DORA API that the model does not enforce (id format, `services` or `team` required, known attributes).
`status` makes it answer 202/400/403/429/500 on demand; `Fault`s (see server.py) do the rest.
"""

from __future__ import annotations

import json
import re

from .server import LoopbackServer, Request, Response

DORA_FAILURE_PATH = '/api/v2/dora/failure'
_ID = re.compile(r'[A-Za-z0-9\-_.:]{16,128}')


def dora_failure_problems(body) -> list[str]:
    """What is wrong with a DORA failure request body; empty when Datadog would accept it."""
    from datadog_api_client import Configuration
    from datadog_api_client.exceptions import OpenApiException
    from datadog_api_client.model_utils import validate_and_convert_types
    from datadog_api_client.v2.model.dora_failure_request import DORAFailureRequest
    from datadog_api_client.v2.model.dora_failure_request_attributes import DORAFailureRequestAttributes

    try:
        validate_and_convert_types(body, (DORAFailureRequest,), ['body'], True, True, Configuration())
    except (OpenApiException, TypeError, ValueError) as e:
        return [str(e)]
    attributes = body['data']['attributes']
    problems = [f'unknown attribute {name!r}' for name in attributes if name not in DORAFailureRequestAttributes.attribute_map]
    if 'id' in attributes and not _ID.fullmatch(attributes['id']):
        problems.append(f'id {attributes["id"]!r} is not 16-128 characters of [A-Za-z0-9-_.:]')
    if not attributes.get('services') and not attributes.get('team'):
        problems.append('one of `services` or `team` is required')
    tags = attributes.get('custom_tags') or []
    if len(tags) > 100 or any(':' not in tag for tag in tags):
        problems.append('custom_tags must be at most 100 key:value strings')
    if 'finished_at' in attributes and attributes['finished_at'] < attributes['started_at']:
        problems.append('finished_at is before started_at')
    return problems


class DatadogIntake(LoopbackServer):
    def __init__(self, api_key: str = 'sim-datadog-api-key', status: int = 200):
        super().__init__()
        self.api_key = api_key
        self.status = status  # what a valid post is answered with: 200, or 202 (accepted, delayed)
        self.failures: list[dict] = []  # every valid DORA failure body accepted, in order
        self.problems: list[str] = []  # every invalid body's problems

    def handle(self, request: Request) -> Response:
        if request.method != 'POST' or request.path != DORA_FAILURE_PATH:
            return Response.json(404, {'errors': ['Not found']})
        if request.headers.get('dd-api-key') != self.api_key:
            return Response.json(403, {'errors': ['Forbidden']})
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        problems = dora_failure_problems(body) if isinstance(body, dict) else ['body is not a JSON object']
        if problems:
            self.problems.extend(problems)
            return Response.json(400, {'errors': problems})
        self.failures.append(body)
        return Response.json(self.status, {'data': {'id': body['data']['attributes'].get('id'), 'type': 'dora_failure'}})

    def latest_by_id(self) -> dict[str, dict]:
        """The last failure sent for each DORA id: what Datadog ends up holding."""
        return {body['data']['attributes']['id']: body['data']['attributes'] for body in self.failures}

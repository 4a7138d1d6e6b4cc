"""A loopback Datadog API that records the DORA failures it receives and checks each one.

Every request is validated against Datadog's published v2 description (`loopback/specs/datadog.json`: paths,
parameters, both keys, bodies), and so is every answer it gives (statuses, bodies: the PATCH's 202
`{"data": null}`, JSON:API error objects for a 400, `{"errors": ["Forbidden"]}` for a 403). Each DORA failure
body is also validated with `datadog-api-client`'s `DORAFailureRequest` model, plus the rules of the DORA API
that neither enforces (id format, `services` or `team` required, known attributes). `status` makes it answer
202/400/403/429/500 on demand; `Fault`s (see server.py) do the rest.

It also holds deployments (seeded with `deploy`, marked by Datadog itself with `mark`) and serves the DORA
reads and markings that need an application key as well: list deployments (with their marking), mark one as
a change failure (PATCH), list the failures it accepted. Those bodies are validated with the
`DORAListDeploymentsRequest`, `DORADeploymentPatchRequest` and `DORAListFailuresRequest` models too, and its
own list answers with the list response models.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from urllib.parse import unquote

from . import spec
from .server import LoopbackServer, Request, Response

DORA_FAILURE_PATH = '/api/v2/dora/failure'
DEPLOYMENTS_PATH = '/api/v2/dora/deployments'
FAILURES_PATH = '/api/v2/dora/failures'
VALIDATE_PATH = '/api/v1/validate'
_ID = re.compile(r'[A-Za-z0-9\-_.:]{16,128}')
VENDOR = 'datadog'
_TITLES = {400: 'Bad Request', 404: 'Not Found'}


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
    problems = [
        f'unknown attribute {name!r}' for name in attributes if name not in DORAFailureRequestAttributes.attribute_map
    ]
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
    def __init__(
        self,
        api_key: str = 'sim-datadog-api-key',
        status: int = 200,
        app_key: str = 'sim-datadog-app-key',
        validate: bool = True,
    ):
        super().__init__()
        self.validate = validate  # against Datadog's description; perf turns it off (its CPU is not the check's)
        self.api_key = api_key
        self.app_key = app_key  # DD-APPLICATION-KEY, for the deployments and failures reads and markings
        self.status = status  # what a valid post is answered with: 200, or 202 (accepted, delayed)
        self.failures: list[dict] = []  # every valid DORA failure body accepted, in order
        self.problems: list[str] = []  # every invalid body's problems
        self.deployments: dict[str, dict] = {}  # id -> {service, env, version, started_at, finished_at, git}
        self.patches: list[tuple[str, dict]] = []  # every valid marking accepted: (deployment id, attributes)
        self.listed_deployments = 0  # deployments answered by list requests, all pages

    def start(self):
        super().start()
        # server.py's handler speaks GET and POST; marking a deployment is a PATCH (this server's handler only).
        handler = self._httpd.RequestHandlerClass
        handler.do_PATCH = handler.do_POST
        return self

    def deploy(
        self,
        service: str,
        env: str | None,
        version: str | None,
        started_at: datetime,
        finished_at: datetime,
        git: dict | None = None,
        team: str | None = None,
        custom_tags: list[str] | None = None,
    ) -> str:
        """A deployment as Datadog holds it (`POST /api/v2/dora/deployment` had sent it); returns its id.

        `git` is what a deployment is sent with, `{commit_sha, repository_url}`; it is listed the way
        Datadog answers, `{commit_sha, repository_id}` (the URL without its scheme).
        """
        with self._lock:
            deployment_id = f'sim-deployment-{len(self.deployments) + 1:04d}'
            self.deployments[deployment_id] = {
                'service': service,
                'env': env,
                'version': version,
                'started_at': started_at,
                'finished_at': finished_at,
                'git': git,
                'team': team,
                'custom_tags': list(custom_tags or ()),  # `key:value`, listed as sent
                'change_failure': None,  # unmarked: Datadog answers null
                'remediation': None,
            }
        return deployment_id

    def mark(self, deployment_id: str, remediation: dict | None = None, change_failure: bool | None = True) -> None:
        """A marking made by Datadog itself (rollback detection, a rollforward rule, a person in the UI)."""
        with self._lock:
            self.deployments[deployment_id].update(change_failure=change_failure, remediation=remediation)

    def markings(self) -> dict[str, dict]:
        """The last marking of each deployment: what Datadog ends up holding."""
        return {deployment_id: attributes for deployment_id, attributes in self.patches}

    def handle(self, request: Request) -> Response:
        if request.method == 'GET' and request.path == VALIDATE_PATH:  # v1, outside the v2 description
            valid = request.headers.get('dd-api-key') == self.api_key
            return Response.json(200, {'valid': True}) if valid else _forbidden()
        if self._refused(request):  # as Datadog does, before looking at the request
            return _forbidden()
        if self.validate:
            problem = spec.request_problem(VENDOR, request)
            if problem:
                self.problems.append(problem)
                return _errors(400, [problem])
        response = self._answer(request)
        if self.validate and self._declared(request, response.status):
            problem = spec.response_problem(VENDOR, request, response)
            if problem:
                self.problems.append(f'the intake answered badly: {problem}')
        return response

    def _refused(self, request: Request) -> bool:
        """A wrong or missing key: the API key everywhere, the application key as well but to send a failure."""
        if request.headers.get('dd-api-key') != self.api_key:
            return True
        needs_app_key = not (request.method == 'POST' and request.path == DORA_FAILURE_PATH)
        return needs_app_key and request.headers.get('dd-application-key') != self.app_key

    def _declared(self, request: Request, status: int) -> bool:
        for template, item in spec.document(VENDOR)['paths'].items():
            if re.fullmatch(re.sub(r'\{[^}]+\}', '[^/]+', template), request.path):
                operation = item.get(request.method.lower()) or {}
                return str(status) in operation.get('responses', {})
        return False

    def _answer(self, request: Request) -> Response:
        if request.method == 'POST' and request.path == DEPLOYMENTS_PATH:
            return self._with_app_key(request, self._list_deployments)
        if request.method == 'POST' and request.path == FAILURES_PATH:
            return self._with_app_key(request, self._list_failures)
        if request.method == 'PATCH' and request.path.startswith(DEPLOYMENTS_PATH + '/'):
            return self._with_app_key(request, self._mark)
        if request.method != 'POST' or request.path != DORA_FAILURE_PATH:
            return _errors(404, ['Not found'])
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        problems = dora_failure_problems(body) if isinstance(body, dict) else ['body is not a JSON object']
        if problems:
            return self._reject(problems)
        self.failures.append(body)
        return Response.json(
            self.status, {'data': {'id': body['data']['attributes'].get('id'), 'type': 'dora_failure'}}
        )

    def latest_by_id(self) -> dict[str, dict]:
        """The last failure sent for each DORA id: what Datadog ends up holding."""
        return {body['data']['attributes']['id']: body['data']['attributes'] for body in self.failures}

    # -- reads and markings with the application key --------------------------------------------------
    def _with_app_key(self, request: Request, serve) -> Response:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        return serve(request, body)

    def _list_deployments(self, request: Request, body) -> Response:
        problems = list_request_problems(body, 'deployments')
        if problems:
            return self._reject(problems)
        listed = [_listed_deployment(deployment_id, d) for deployment_id, d in self.deployments.items()]
        return self._answer_list(body['data']['attributes'], listed, 'deployments')

    def _list_failures(self, request: Request, body) -> Response:
        problems = list_request_problems(body, 'failures')
        if problems:
            return self._reject(problems)
        listed = [_listed_failure(attributes) for attributes in self.latest_by_id().values()]
        return self._answer_list(body['data']['attributes'], listed, 'failures')

    def _answer_list(self, query: dict, listed: list[dict], kind: str) -> Response:
        """What matches `query` and `from`/`to` (on the event's start), sorted, at most `limit` of them."""
        since, until = _time(query.get('from')), _time(query.get('to'))
        terms = _terms(query.get('query') or '')
        found = [
            item
            for item in listed
            if (since is None or _time(item['attributes']['started_at']) >= since)
            and (until is None or _time(item['attributes']['started_at']) <= until)
            and all(_matches(item['attributes'], name, value) for name, value in terms)
        ]
        sort = query.get('sort') or '-started_at'
        field = sort.lstrip('-')
        earliest = datetime.min.replace(tzinfo=timezone.utc)
        found.sort(key=lambda item: (_time(item['attributes'].get(field)) or earliest, item['id']))
        if sort.startswith('-'):
            found.reverse()
        document = {'data': found[: query.get('limit', 10)]}
        if kind == 'deployments':
            self.listed_deployments += len(document['data'])
        # The intake's own answers are checked too: the check is only as right as what it is tested against.
        self.problems.extend(f'the intake answered badly: {p}' for p in list_response_problems(document, kind))
        return Response.json(200, document)

    def _mark(self, request: Request, body) -> Response:
        deployment_id = unquote(request.path[len(DEPLOYMENTS_PATH) + 1 :])
        failed = self.deployments.get(deployment_id)
        if failed is None:
            self.problems.append(f'marked deployment {deployment_id}, which does not exist')
            return _errors(404, [f'deployment {deployment_id} not found'])
        problems = patch_request_problems(body, deployment_id)
        remediation = None if problems else body['data']['attributes'].get('remediation')
        if remediation and 'id' in remediation:
            fix = self.deployments.get(remediation['id'])
            if fix is None or (fix['service'], fix['env']) != (failed['service'], failed['env']):
                problems.append(f'remediation {remediation["id"]} is not a deployment of the same service and env')
        if problems:
            return self._reject(problems)
        attributes = body['data']['attributes']
        with self._lock:
            self.patches.append((deployment_id, attributes))
            failed['change_failure'] = attributes.get('change_failure', failed['change_failure'])
            failed['remediation'] = attributes.get('remediation', failed['remediation'])
        return Response.json(202, {'data': None})  # as Datadog answers it, accepted for processing

    def _reject(self, problems: list[str]) -> Response:
        self.problems.extend(problems)
        return _errors(400, problems)


def list_request_problems(body, kind: str) -> list[str]:
    """What is wrong with a list-deployments or list-failures body (`kind`: 'deployments' or 'failures')."""
    from datadog_api_client.v2.model.dora_list_deployments_request import DORAListDeploymentsRequest
    from datadog_api_client.v2.model.dora_list_deployments_request_attributes import (
        DORAListDeploymentsRequestAttributes,
    )
    from datadog_api_client.v2.model.dora_list_failures_request import DORAListFailuresRequest

    model, wanted_type = {
        'deployments': (DORAListDeploymentsRequest, 'dora_deployments_list_request'),
        'failures': (DORAListFailuresRequest, 'dora_failures_list_request'),
    }[kind]
    problems = _model_problems(body, model)
    if problems:
        return problems
    data = body['data']
    if data.get('type') != wanted_type:
        problems.append(f'data.type must be {wanted_type!r}, got {data.get("type")!r}')
    known = DORAListDeploymentsRequestAttributes.attribute_map.values()  # the same five for failures
    problems += [f'unknown attribute {name!r}' for name in data['attributes'] if name not in known]
    return problems


def patch_request_problems(body, deployment_id: str) -> list[str]:
    """What is wrong with a `PATCH /api/v2/dora/deployments/{id}` body."""
    from datadog_api_client.v2.model.dora_deployment_patch_remediation import DORADeploymentPatchRemediation
    from datadog_api_client.v2.model.dora_deployment_patch_remediation_type import DORADeploymentPatchRemediationType
    from datadog_api_client.v2.model.dora_deployment_patch_request import DORADeploymentPatchRequest
    from datadog_api_client.v2.model.dora_deployment_patch_request_attributes import (
        DORADeploymentPatchRequestAttributes,
    )

    problems = _model_problems(body, DORADeploymentPatchRequest)
    if problems:
        return problems
    data = body['data']
    if data['type'] != 'dora_deployment_patch_request':
        problems.append(f'data.type must be \'dora_deployment_patch_request\', got {data["type"]!r}')
    if data['id'] != deployment_id:
        problems.append(f'data.id {data["id"]!r} is not the deployment in the path, {deployment_id!r}')
    attributes = data['attributes']
    known = DORADeploymentPatchRequestAttributes.attribute_map
    problems += [f'unknown attribute {name!r}' for name in attributes if name not in known]
    remediation = attributes.get('remediation')
    if remediation is not None:
        known = DORADeploymentPatchRemediation.attribute_map
        problems += [f'unknown remediation field {name!r}' for name in remediation if name not in known]
        if ('id' in remediation) == ('version' in remediation):
            problems.append('remediation needs one of `id` or `version`, not both')
        if remediation.get('type') not in DORADeploymentPatchRemediationType.allowed_values:
            problems.append(f'remediation.type must be rollback or rollforward, got {remediation.get("type")!r}')
    return problems


def list_response_problems(document, kind: str) -> list[str]:
    from datadog_api_client.v2.model.dora_deployments_list_response import DORADeploymentsListResponse
    from datadog_api_client.v2.model.dora_failures_list_response import DORAFailuresListResponse

    return _model_problems(document, DORADeploymentsListResponse if kind == 'deployments' else DORAFailuresListResponse)


def _model_problems(body, model) -> list[str]:
    from datadog_api_client import Configuration
    from datadog_api_client.exceptions import OpenApiException
    from datadog_api_client.model_utils import validate_and_convert_types

    if not isinstance(body, dict):
        return ['body is not a JSON object']
    try:
        validate_and_convert_types(body, (model,), ['body'], True, True, Configuration())
    except (OpenApiException, TypeError, ValueError) as e:
        return [str(e)]
    return []


def _listed_deployment(deployment_id: str, deployment: dict) -> dict:
    attributes = {
        'service': deployment['service'],
        'started_at': _iso(deployment['started_at']),
        'finished_at': _iso(deployment['finished_at']),
    }
    attributes.update({name: deployment[name] for name in ('env', 'version', 'team') if deployment[name]})
    if deployment['custom_tags']:
        attributes['custom_tags'] = deployment['custom_tags']
    attributes['change_failure'] = deployment['change_failure']
    if deployment['remediation']:
        attributes['remediation'] = deployment['remediation']
    git = deployment['git']
    if git:
        repository_id = re.sub(r'^[a-z]+://|\.git$', '', git['repository_url'])
        attributes['git'] = {'commit_sha': git['commit_sha'], 'repository_id': repository_id}
    return {'id': deployment_id, 'type': 'dora_deployment', 'attributes': attributes}


def _listed_failure(sent: dict) -> dict:
    """A failure as the list answers it: the attributes it was sent with, times as date-times."""
    from datadog_api_client.v2.model.dora_incident_object_attributes import DORAIncidentObjectAttributes

    attributes = {name: value for name, value in sent.items() if name in DORAIncidentObjectAttributes.attribute_map}
    for name in ('started_at', 'finished_at'):
        if name in attributes:
            attributes[name] = _iso(_from_number(attributes[name]))
    return {'id': sent['id'], 'type': 'dora_failure', 'attributes': attributes}


def _errors(status: int, details: list[str]) -> Response:
    """Datadog's JSON:API error objects."""
    title = _TITLES.get(status, 'Error')
    return Response.json(status, {'errors': [{'status': str(status), 'title': title, 'detail': d} for d in details]})


def _forbidden() -> Response:
    """A refused key: Datadog answers a 403 with a list of strings (its `APIErrorResponse`)."""
    return Response.json(403, {'errors': ['Forbidden']})


def _terms(query: str) -> list[tuple[str, str]]:
    """`service:checkout env:"prod-eu"` -> [('service', 'checkout'), ('env', 'prod-eu')]; terms are ANDed."""
    return [
        (name, quoted.replace('\\"', '"') if quoted else bare)
        for name, quoted, bare in re.findall(r'([\w.@-]+):(?:"((?:[^"\\]|\\.)*)"|(\S+))', query)
    ]


def _matches(attributes: dict, name: str, value: str) -> bool:
    if name == 'service':
        return value in (attributes.get('services') or [attributes.get('service')])
    if name in ('env', 'team', 'severity', 'version'):
        return attributes.get(name) == value
    return f'{name}:{value}' in (attributes.get('custom_tags') or [])


def _from_number(stamp: int) -> datetime:
    """A DORA timestamp in seconds, milliseconds or nanoseconds."""
    for divisor in (1, 1_000, 1_000_000_000):
        if stamp / divisor < 10**11:
            return datetime.fromtimestamp(stamp / divisor, timezone.utc)
    return datetime.fromtimestamp(stamp / 1_000_000_000, timezone.utc)


def _iso(moment: datetime) -> str:
    """As Datadog writes date-times: UTC, milliseconds, `Z`."""
    return moment.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def _time(value) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value) if isinstance(value, str) else value

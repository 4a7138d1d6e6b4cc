"""The vendors' API descriptions the tests validate against live in the repository, minimal and prose-free."""

import importlib.util
import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from loopback.pagerduty import PagerDutySimulator
from loopback.server import Request, Response
from loopback.spec import SPECS, pagerduty_request_problem, request_problem, response_problem

REPOSITORY = Path(__file__).resolve().parents[1]


def _derive_specs():
    # Importing the script reads nothing outside the repository: only running it does.
    spec = importlib.util.spec_from_file_location('derive_specs', REPOSITORY / 'scripts' / 'derive_specs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OPERATIONS = _derive_specs().OPERATIONS
PROSE = {'description', 'summary', 'example', 'examples', 'tags', 'externalDocs'}
# Objects whose keys are names (of properties, media types, status codes, components), not keywords.
NAME_MAPS = {
    'properties',
    'patternProperties',
    'content',
    'responses',
    'headers',
    'encoding',
    'schemas',
    'parameters',
    'requestBodies',
    'securitySchemes',
    'paths',
    'links',
    'callbacks',
    'mapping',
}


def derived(vendor) -> dict:
    return json.loads((SPECS / f'{vendor}.json').read_text())


def prose_keys(node, where='#'):
    """Where a keyword that carries prose (or an `x-` extension) is left. An empty `description` is what
    OpenAPI requires of a Response object, and says nothing; `x-derived-from` at the top says where the
    file comes from."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from prose_keys(item, f'{where}/{index}')
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in PROSE and not (key == 'description' and value == '') or key.startswith('x-') and where != '#':
                yield f'{where}/{key}'
            if key in ('enum', 'default', 'required'):
                continue
            if key in NAME_MAPS and isinstance(value, dict):
                for name, item in value.items():
                    yield from prose_keys(item, f'{where}/{key}/{name}')
            else:
                yield from prose_keys(value, f'{where}/{key}')


def references(node):
    if isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == '$ref':
                yield value
            else:
                yield from references(value)


@pytest.mark.parametrize('vendor', sorted(OPERATIONS))
def test_derived_description_is_valid_minimal_and_prose_free(vendor):
    document = derived(vendor)

    validate(document)  # OpenAPI 3.0, every reference resolving inside the file
    assert document['openapi'].startswith('3.0')
    assert set(document['x-derived-from']) >= {'repository', 'path', 'as_of'}
    assert list(document)[0] == 'x-derived-from'
    assert list(prose_keys(document)) == []
    assert all(ref.startswith('#/components/') for ref in references(document))
    wanted = {(method.lower(), path) for method, path in OPERATIONS[vendor]['operations']}
    present = {(method, path) for path, item in document['paths'].items() for method in item if method != 'parameters'}
    assert present == wanted


@pytest.mark.parametrize('vendor', sorted(OPERATIONS))
def test_derived_description_keeps_no_unreachable_component(vendor):
    document = derived(vendor)
    components = {(section, name) for section, named in document.get('components', {}).items() for name in named}
    reached, pending = set(), [*references(document['paths'])]
    pending += [f'#/components/securitySchemes/{name}' for req in document.get('security', []) for name in req]
    for item in document['paths'].values():
        for operation in item.values():
            if isinstance(operation, dict):
                pending += [f'#/components/securitySchemes/{n}' for req in operation.get('security', []) for n in req]
    while pending:
        section, name = pending.pop().split('/')[2:4]
        if (section, name) not in reached:
            reached.add((section, name))
            pending.extend(references(document['components'][section][name]))
    assert components == reached


def test_derived_descriptions_are_the_ones_the_loopback_reads():
    assert sorted(path.stem for path in SPECS.glob('*.json')) == sorted(OPERATIONS)


# -- PagerDuty requests ------------------------------------------------------------------------------------

HEADERS = {
    'accept': 'application/vnd.pagerduty+json;version=2',
    'content-type': 'application/json',
    'authorization': 'Token token=sim-pagerduty-token',
}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def pd_get(path, query=(), headers=None) -> Request:
    return Request('GET', path, list(query), dict(HEADERS if headers is None else headers), b'')


def log_entries_query(**changes):
    query = {
        'since': (NOW - timedelta(hours=1)).isoformat(),
        'until': NOW.isoformat(),
        'time_zone': 'UTC',
        'is_overview': 'true',
        'include[]': 'incidents',
        'limit': '100',
        'offset': '0',
    }
    return [(key, value) for key, value in {**query, **changes}.items() if value is not None]


def test_a_request_the_check_sends_passes():
    assert pagerduty_request_problem(pd_get('/log_entries', log_entries_query())) is None
    assert request_problem('pagerduty', pd_get('/log_entries', log_entries_query())) is None
    assert request_problem('pagerduty', pd_get('/incidents/Q1ABCDEF', [])) is None


@pytest.mark.parametrize(
    'changes',
    [
        {'include[]': 'incident'},  # not one of incidents, services, channels, teams
        {'limit': 'many'},
        {'since': 'yesterday'},
        {'is_overview': 'maybe'},
    ],
)
def test_a_request_pagerdutys_description_forbids_fails(changes):
    problem = pagerduty_request_problem(pd_get('/log_entries', log_entries_query(**changes)))
    assert problem is not None and problem.startswith('GET /log_entries: ')


def test_limit_over_100_is_not_a_violation_of_the_description():
    # "Maximum of 100" is only prose in PagerDuty's description (and PagerDuty clamps it): not checkable here.
    assert request_problem('pagerduty', pd_get('/log_entries', log_entries_query(limit='1000'))) is None


@pytest.mark.parametrize('header', ['accept', 'content-type'])
def test_pagerduty_headers_are_insisted_on(header):
    headers = {name: value for name, value in HEADERS.items() if name != header}
    assert f'header {header} must be' in pagerduty_request_problem(pd_get('/log_entries', [], headers))


def test_a_request_with_no_token_fails_the_descriptions_security():
    headers = {name: value for name, value in HEADERS.items() if name != 'authorization'}
    assert request_problem('pagerduty', pd_get('/log_entries', [], headers)) is not None


def test_an_operation_outside_the_description_fails():
    assert request_problem('pagerduty', pd_get('/services', [])) is not None


# -- PagerDuty answers -------------------------------------------------------------------------------------


@pytest.fixture
def simulator():
    sim = PagerDutySimulator()  # its `handle` is called directly: no server
    sim.add_service('PCHKOUT', 'Checkout API', teams=[('PTEAM01', 'Payments Team')])
    for minutes in (50, 40):
        sim.trigger('PCHKOUT', NOW - timedelta(minutes=minutes))
    return sim


def test_response_problem_accepts_a_log_entries_page_without_embedded_incidents(simulator):
    request = pd_get('/log_entries', log_entries_query(**{'include[]': None}))
    response = simulator.handle(request)
    assert response.status == 200 and json.loads(response.body)['log_entries']
    assert response_problem('pagerduty', request, response) is None


def test_response_problem_rejects_log_entries_that_are_not_a_list():
    request = pd_get('/log_entries', log_entries_query())
    document = {'log_entries': {'id': 'R1'}, 'limit': 100, 'offset': 0, 'more': False, 'total': None}
    problem = response_problem('pagerduty', request, Response.json(200, document))
    assert problem is not None and 'log_entries' in problem


def test_response_problem_rejects_an_undeclared_status_and_a_wrong_content_type():
    request = pd_get('/log_entries', log_entries_query())
    assert response_problem('pagerduty', request, Response.json(418, {})) is not None
    html = Response(200, b'<html></html>', {'Content-Type': 'text/html'})
    assert response_problem('pagerduty', request, html) is not None


def test_pagerdutys_description_still_rejects_what_pagerduty_sends(simulator):
    """Why the PagerDuty simulator does not check its own answers: the description is wrong where the check
    reads. It types a log entry's `incident` as a reference only (`include[]=incidents` embeds the whole
    incident, `type: incident`), and has no `nullable` on an incident's `priority`, `resolve_reason`,
    `resolved_at`, `incident_key`, all null on real incidents. When this test fails, PagerDuty fixed their
    description: re-derive, and let the simulator check its answers with `response_problem`."""
    request = pd_get('/log_entries', log_entries_query())
    embedded = response_problem('pagerduty', request, simulator.handle(request))
    assert embedded is not None and "'incident' is not one of ['incident_reference']" in embedded
    incident_id = next(iter(simulator.incidents))
    request = pd_get(f'/incidents/{incident_id}')
    unresolved = response_problem('pagerduty', request, simulator.handle(request))
    assert unresolved is not None and 'None for not nullable' in unresolved


# -- self-contained ----------------------------------------------------------------------------------------


def test_nothing_outside_the_derivation_script_reads_the_vendor_descriptions_beside_the_repository():
    try:
        listed = subprocess.run(
            ['git', 'ls-files', '-z'], cwd=REPOSITORY, capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f'not a git checkout: {e}')
    needles = ('shared' + '/specs', '..' + '/shared')  # spelled apart so that this file does not mention them
    offenders = []
    for name in filter(None, listed.split('\0')):
        if name == 'scripts/derive_specs.py' or name.endswith('.md') or name.startswith('.ci/'):
            continue
        path = REPOSITORY / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet in the index
        text = path.read_bytes().decode('utf-8', 'replace')
        offenders += [f'{name}: {needle}' for needle in needles if needle in text]
    assert offenders == []

"""What a hostile server or a broken proxy answers cannot hold the check (issue 19): every tool and the Datadog
client, over real HTTP against the loopback servers. A bounded answer is proven by what the server managed to send
(never by wall-clock time); a redirect elsewhere by a second server that must receive nothing."""

import logging

import pytest

from datadog_checks.dora_incidents.datadog import DORA_PATH
from datadog_checks.dora_incidents.datadog.client import DatadogHttp
from datadog_checks.dora_incidents.sources import SOURCES, source_class
from loopback.server import Fault, LoopbackServer, Response
from loopback.simulators import make_simulator

from .common import ago, counted, reporting_instance, restores, secrets

GiB = 1 << 30
MiB = 1 << 20
MALFORMED = {
    'deep nesting': (b'[' * 500_000 + b']' * 500_000, 'nested too deeply'),
    'invalid UTF-8': (b'{"data": "\xff\xfe"}', 'not valid UTF-8'),
    'NaN': (b'{"data": [], "total": NaN}', 'NaN'),
    'infinite number': (b'{"data": [], "total": 1e999}', '1e999'),
    'huge number': (b'{"data": [], "total": ' + b'9' * 10_000 + b'}', 'number too large'),
    'HTML with a 200': (b'<html><body>Sign in</body></html>', 'not JSON'),
    'truncated body': (b'{"data": [{"id": "Q1", "status": "resol', 'not JSON: it is cut off before its end'),
}


class Recorder(LoopbackServer):
    """Another host: whatever reaches it is recorded (and must not)."""

    def handle(self, request):
        return Response.json(200, {'data': []})


@pytest.fixture(params=sorted(SOURCES))  # every tool: one without a simulator fails here
def tool(request):
    with make_simulator(request.param) as simulator:
        yield simulator


@pytest.fixture
def settings(tool, intake):
    return reporting_instance(tool, intake, send_dora_failures=True)


@pytest.fixture
def recorder():
    with Recorder() as server:
        yield server


def resolved(tool, now, count=2):
    incidents = []
    for n in range(count):
        incident = tool.open(ago(now, hours=3, seconds=n))
        tool.resolve(incident, ago(now, hours=1, seconds=n))
        incidents.append(incident)
    return incidents


def failed_then_recovered(tool, make_check, run, settings, aggregator, incidents, **options):
    """The faulted run's warnings; then the next run reads every incident once."""
    check = make_check({**settings, **options})
    warnings = run(check)
    assert counted(aggregator) == 0
    aggregator.reset()
    assert run(make_check(settings)) == []
    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == len(incidents)
    return warnings


def names_the_tool(tool, text):
    return source_class(tool.source).display_name in text and tool.list_path.split('/')[-1] in text


@pytest.mark.parametrize('fault', ['inflate', 'flood'])
def test_an_answer_past_max_response_size_stops_the_read_at_the_cap(
    aggregator, make_check, run, tool, settings, now, fault
):
    incidents = resolved(tool, now)
    size = 64 * GiB if fault == 'inflate' else 256 * MiB  # gzip: ~1 KiB a MiB, so 64 MiB on the wire
    tool.inject(Fault(path=tool.list_path, **{fault: size}))

    warnings = failed_then_recovered(
        tool, make_check, run, settings, aggregator, incidents, max_response_size=1, timeout=30
    )

    assert len(warnings) == 1 and names_the_tool(tool, warnings[0])
    assert '`max_response_size` (1 MiB)' in warnings[0]
    wire = size // 1024 if fault == 'inflate' else size
    # The read stopped at the cap: what got out is what the sockets' buffers took, far from the whole answer.
    assert tool.streamed < wire // 4


@pytest.mark.parametrize('drip', ['drip', 'drip_headers'])
def test_a_dripping_server_cannot_hold_the_run_past_timeout(aggregator, make_check, run, tool, settings, now, drip):
    incidents = resolved(tool, now)
    # A byte every 0.25 s: each read returns well within `timeout`, the body (or the headers) never in time.
    tool.inject(Fault(path=tool.list_path, **{drip: 0.25}))

    warnings = failed_then_recovered(tool, make_check, run, settings, aggregator, incidents, timeout=1)

    assert len(warnings) == 1 and names_the_tool(tool, warnings[0]) and '`timeout` (1 s' in warnings[0], warnings
    # About four bytes a second for the one second `timeout` allows, out of a head of 400 bytes and more (or a
    # page's body): the request ended at its `timeout` however the server dripped.
    assert tool.streamed < 20


# Each credential form a tool is read with (instance options), and the paths a redirect is tried on with it.
CREDENTIAL_FORMS = {
    'servicenow': {
        'api_token': ({}, ()),
        'basic_auth': ({'basic_auth': True}, ()),
        # A 307 on the token request would post `client_secret` again, in the form, wherever it points.
        'oauth': ({'oauth': True}, ('/oauth_token.do',)),
    },
}


def everything_sent(request) -> str:
    return ' '.join([request.path, repr(request.query), repr(request.headers), request.body.decode('latin-1')])


def test_a_redirect_to_another_host_sends_nothing_there(
    aggregator, make_check, run, tool, settings, intake, now, recorder, caplog
):
    caplog.set_level(logging.DEBUG)
    incidents = resolved(tool, now)
    elsewhere = recorder.url.replace('127.0.0.1', 'localhost')  # another host name, to the check
    forms = CREDENTIAL_FORMS.get(tool.source, {'api_token': ({}, ())})
    output = ''
    for form, (options, paths) in forms.items():
        instance = {**settings, **tool.instance(**options), 'log_requests': True}
        if 'api_token' not in tool.instance(**options):
            instance.pop('api_token', None)  # the form's own credential, not the default token as well
        for path in (*paths, tool.list_path):
            tool.inject(Fault(path=path, status=307, redirect=f'{elsewhere}{path}?page=2'))
            warnings = run(make_check(instance))
            assert counted(aggregator) == 0
            assert len(warnings) == 1 and 'localhost' in warnings[0] and '`api_url`' in warnings[0], (form, warnings)
            output += ''.join(warnings)

    assert recorder.requests == []
    held = secrets(tool, intake)
    # What is looked for is real: the tool itself received the credentials (the same secrets).
    assert any(secret in everything_sent(request) for request in tool.requests for secret in held)
    output += caplog.text
    assert [secret for secret in held if secret in output] == []
    assert run(make_check(settings)) == []
    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == len(incidents)


def test_a_redirect_within_the_configured_host_is_followed(aggregator, make_check, run, tool, settings, now):
    incidents = resolved(tool, now)
    # 307: the same request again (a POST stays a POST)
    tool.inject(Fault(path=tool.list_path, status=307, redirect=tool.list_path))

    check = make_check(settings)
    warnings = run(check)

    assert warnings == []
    assert sorted(restores(aggregator)) == sorted(incidents)


def test_redirects_without_end_within_the_host_are_an_error_about_the_tool(
    aggregator, make_check, run, tool, settings, now
):
    incidents = resolved(tool, now)
    # The request and 5 redirects, each answered with one more: the 6th is not followed.
    tool.inject(Fault(path=tool.list_path, status=307, redirect=tool.list_path, times=6))

    warnings = failed_then_recovered(tool, make_check, run, settings, aggregator, incidents)

    assert len(warnings) == 1 and names_the_tool(tool, warnings[0]) and 'more than 5 redirects' in warnings[0]


@pytest.mark.parametrize('kind', sorted(MALFORMED))
def test_a_malformed_answer_is_an_error_about_the_tool(aggregator, make_check, run, tool, settings, now, kind, caplog):
    body, says = MALFORMED[kind]
    incidents = resolved(tool, now)
    tool.inject(Fault(path=tool.list_path, status=200, body=body, headers={'Content-Type': 'application/json'}))

    warnings = failed_then_recovered(tool, make_check, run, settings, aggregator, incidents)

    assert len(warnings) == 1 and names_the_tool(tool, warnings[0]) and says in warnings[0], warnings
    assert 'recursion' not in warnings[0] and 'Traceback' not in caplog.text


# -- the Datadog client ------------------------------------------------------------------------------------------
@pytest.fixture
def datadog(make_check, instance, intake):
    check = make_check({**instance, 'max_response_size': 1, 'timeout': 1})
    check.load_configuration_models()
    return DatadogHttp(check, intake.url, intake.api_key, None, 1)


def post(http):
    attributes = {'id': 'pagerduty:Q000000000000001', 'name': 'x', 'started_at': 1, 'finished_at': 2, 'services': ['s']}
    body = {'data': {'attributes': attributes}}
    return http.send('POST', DORA_PATH, body)


@pytest.mark.parametrize('fault', [{'inflate': 64 * GiB}, {'flood': 256 * MiB}], ids=['inflate', 'flood'])
def test_datadog_answering_past_max_response_size_is_cut_at_the_cap(datadog, intake, fault):
    intake.inject(Fault(path=DORA_PATH, **fault))

    answer = post(datadog)

    assert answer.status is None and '`max_response_size` (1 MiB)' in answer.detail and DORA_PATH in answer.detail
    assert intake.streamed < (fault.get('flood') or fault.get('inflate', 0) // 1024) // 4


@pytest.mark.parametrize('drip', ['drip', 'drip_headers'])
def test_datadog_dripping_is_cut_at_timeout(datadog, intake, drip):
    intake.inject(Fault(path=DORA_PATH, **{drip: 0.25}))

    answer = post(datadog)

    assert answer.status is None and f'Datadog did not answer in time: POST {DORA_PATH}' in answer.detail
    assert '`timeout` (1 s' in answer.detail and intake.streamed < 20


def test_datadog_redirecting_elsewhere_gets_no_key_there(datadog, intake, recorder):
    elsewhere = recorder.url.replace('127.0.0.1', 'localhost')
    intake.inject(Fault(path=DORA_PATH, redirect=f'{elsewhere}{DORA_PATH}'))

    answer = post(datadog)

    assert recorder.requests == [] and answer.status is None
    assert 'localhost' in answer.detail and '`datadog_api_url`' in answer.detail
    assert intake.api_key not in answer.detail


def test_datadog_answering_malformed_json_is_an_error_about_datadog(datadog, intake):
    body, says = MALFORMED['deep nesting']
    intake.inject(Fault(path=DORA_PATH, status=200, body=body))

    answer = post(datadog)

    assert answer.status is None and 'Datadog answered' in answer.detail and says in answer.detail

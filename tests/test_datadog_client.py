"""The Datadog client's parts (issue 15): the thin HTTP client keeps the Agent's proxy and TLS settings, the write
pool takes a write queued while its workers are idle at once, Datadog's answers and errors are read as Datadog
gives them. Over HTTP against the loopback intake."""

import threading
import time
from datetime import timedelta

import pytest
import requests

from datadog_checks.dora_incidents.datadog import DORA_PATH, DatadogApi, Write, pool
from datadog_checks.dora_incidents.datadog.client import DatadogHttp
from loopback.server import Fault

from .common import NO_DEADLINE, ago, dora_ids


def failure(key: str) -> Write:
    body = {'data': {'attributes': {'id': key, 'name': 'x', 'started_at': 1, 'finished_at': 2, 'services': ['s']}}}
    return Write(key, 'POST', DORA_PATH, body, f'the DORA failure {key}')


@pytest.fixture
def configured(make_check, instance):
    def configured(**options):
        check = make_check({**instance, **options})
        check.load_configuration_models()
        return check

    return configured


def test_the_agents_proxy_carries_the_writes(configured, datadog_agent, intake):
    # The intake stands in for the proxy: a request through a proxy names the whole URL, Datadog's host included.
    datadog_agent._config['proxy'] = {'http': intake.url}
    check = configured(datadog_api_url='http://api.datadoghq.invalid')
    api = DatadogApi(check, 'http://api.datadoghq.invalid', intake.api_key)
    api.begin(NO_DEADLINE)
    api.send(failure('pagerduty:Q000000000000001'))
    api.finish()

    assert api.http.proxy == intake.url
    assert dora_ids(intake) == ['pagerduty:Q000000000000001'] and api.pending == 0


def test_the_agents_no_proxy_and_the_environments_proxy(configured, datadog_agent, monkeypatch):
    datadog_agent._config['proxy'] = {'https': 'http://agent-proxy:3128', 'no_proxy': ['api.datadoghq.eu']}
    monkeypatch.setenv('HTTP_PROXY', 'http://environment-proxy:3128')
    monkeypatch.setenv('NO_PROXY', 'internal.example')
    check = configured(timeout=3)

    def proxy(url):
        return DatadogHttp(check, url, 'key', None, 2).proxy

    assert proxy('https://api.datadoghq.com') == 'http://agent-proxy:3128'  # the Agent's, over the environment's
    assert proxy('https://api.datadoghq.eu') is None  # the Agent's no_proxy
    assert proxy('http://api.datadoghq.com') == 'http://environment-proxy:3128'
    assert proxy('http://internal.example') is None  # the environment's NO_PROXY
    http = DatadogHttp(check, 'https://api.datadoghq.com', 'key', None, 2)
    assert http.verify is True and http._pool.connection_pool_kw['timeout'].connect_timeout == 3


def test_tls_is_verified_with_the_agents_defaults(configured):
    http = DatadogHttp(configured(), 'https://api.datadoghq.com', 'key', None, 4)

    context = http._pool.connection_pool_kw['ssl_context']
    assert context.verify_mode.name == 'CERT_REQUIRED' and context.check_hostname
    assert http._pool.connection_pool_kw['maxsize'] == 4  # one kept-alive connection per concurrent write


def test_a_write_queued_while_the_workers_are_idle_goes_at_once(configured, intake, monkeypatch):
    monkeypatch.setattr(pool, 'IDLE_EXIT', 3_600)  # idle workers would otherwise wait an hour for a write
    api = DatadogApi(configured(dora_concurrency=4), intake.url, intake.api_key)
    api.begin(time.monotonic() + 3_600)
    for n in range(8):
        api.send(failure(f'pagerduty:Q{n:015d}'))
    api.save()  # every worker is idle now

    saved = threading.Event()

    def later():
        api.send(failure('pagerduty:Q100000000000000'))
        api.save()
        saved.set()

    threading.Thread(target=later, daemon=True).start()
    # Not a timing: without the notify this never happens (the wait is an hour); the bound only ends a failing test.
    assert saved.wait(60)
    assert 'pagerduty:Q100000000000000' in dora_ids(intake)
    api.finish()


def test_datadogs_error_objects_are_shown_in_warnings(make_check, run, instance, intake, pagerduty, now):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    body = b'{"errors": [{"status": "400", "title": "Bad Request", "detail": "started_at is in the future"}]}'
    intake.inject(Fault(status=400, path=DORA_PATH, body=body))

    warnings = run(make_check(instance))

    assert any('Bad Request: started_at is in the future' in warning and incident in warning for warning in warnings)


def test_a_marking_is_answered_and_taken_as_datadog_answers_it(
    aggregator, make_check, run, instance, intake, pagerduty, now
):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))
    finished = ago(now, hours=3)
    failed = intake.deploy('checkout_api', 'prod', 'v2', finished - timedelta(minutes=5), finished)
    keys = {'DD-API-KEY': intake.api_key, 'DD-APPLICATION-KEY': intake.app_key}
    body = {'data': {'id': failed, 'type': 'dora_deployment_patch_request', 'attributes': {'change_failure': False}}}

    answer = requests.patch(f'{intake.url}/api/v2/dora/deployments/{failed}', json=body, headers=keys)
    assert (answer.status_code, answer.json()) == (202, {'data': None})
    run(make_check({**instance, 'mark_change_failures': True, 'datadog_app_key': intake.app_key}))

    assert intake.markings()[failed] == {'change_failure': True}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)  # a 202 without a body is a success

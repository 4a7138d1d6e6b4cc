"""ServiceNow with an OAuth client (issue 19): the access token is fetched from `/oauth_token.do`, kept, fetched
anew before it expires (on a virtual clock shared by the check and the instance), and a refused client is reported
like a refused credential, no secret shown. Over HTTP against the loopback ServiceNow."""

import logging

import pytest

from loopback.servicenow import OAUTH_PATH, ServiceNowSimulator

from .common import ago, counted, reporting_instance


class Clock:
    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servicenow():
    with ServiceNowSimulator() as simulator:
        yield simulator
    assert simulator.spec_violations == []


@pytest.fixture
def clock(servicenow):
    clock = Clock(1_000_000.0)
    servicenow.clock = clock
    return clock


@pytest.fixture
def settings(servicenow, intake):
    return reporting_instance(servicenow, intake, oauth=True)


def oauth_check(make_check, settings, clock):
    check = make_check(settings)
    check.monotonic = clock
    return check


def resolve_one(servicenow, now, hours=1):
    incident = servicenow.open(ago(now, hours=hours + 2))
    servicenow.resolve(incident, ago(now, hours=hours))
    return incident


def grants(servicenow):
    return [request for request in servicenow.requests if request.path == OAUTH_PATH]


def test_the_token_is_fetched_once_and_kept_while_it_lives(
    aggregator, make_check, run, servicenow, settings, clock, now
):
    resolve_one(servicenow, now)
    check = oauth_check(make_check, settings, clock)

    assert run(check) == []
    clock.now += servicenow.token_life / 2
    assert run(check) == []

    assert counted(aggregator) == 1 and len(grants(servicenow)) == 1
    (token,) = servicenow.issued
    listed = [request for request in servicenow.requests if request.path != OAUTH_PATH]
    assert listed and all(request.headers['authorization'] == f'Bearer {token}' for request in listed)
    assert 'grant_type=client_credentials' in grants(servicenow)[0].body.decode()


def test_the_token_is_renewed_before_it_expires(aggregator, make_check, run, servicenow, settings, clock, now):
    resolve_one(servicenow, now)
    check = oauth_check(make_check, settings, clock)
    assert run(check) == []
    (first,) = servicenow.issued

    clock.now += servicenow.token_life - 30  # 30 s left: a run may outlast it
    before = len(servicenow.requests)
    assert run(check) == []

    assert len(grants(servicenow)) == 2
    # Renewed before use: the list never saw the old token (no 401 to recover from).
    later = [request for request in servicenow.requests[before:] if request.path != OAUTH_PATH]
    assert later and all(first not in request.headers['authorization'] for request in later)


def test_a_refused_client_is_a_refused_credential_and_shows_no_secret(
    aggregator, make_check, run, servicenow, settings, clock, now, caplog
):
    caplog.set_level(logging.DEBUG)
    resolve_one(servicenow, now)
    check = oauth_check(make_check, {**settings, 'log_requests': True}, clock)
    assert run(check) == []
    (token,) = servicenow.issued
    servicenow.client_secret = 'rotated-on-the-instance'  # the check's secret is now refused
    clock.now += servicenow.token_life + 1

    error = check.run()

    assert '`client_id` and `client_secret`' in error
    aggregator.assert_metric('dora.check.source.can_connect', value=0)
    output = error + caplog.text
    assert settings['client_secret'] not in output and token not in output


def test_a_static_access_token_still_works(aggregator, make_check, run, servicenow, intake, now):
    resolve_one(servicenow, now)
    check = make_check(servicenow.instance(datadog_api_url=intake.url, datadog_api_key=intake.api_key, env='prod'))

    assert run(check) == [] and counted(aggregator) == 1 and grants(servicenow) == []


def test_half_an_oauth_client_is_a_configuration_error(make_check, servicenow, settings):
    del settings['client_secret']

    error = make_check(settings).run()

    assert '`client_id` and `client_secret`' in error


def test_the_access_token_is_scrubbed_from_every_log_line_and_warning(
    aggregator, make_check, run, servicenow, settings, clock, now, caplog
):
    caplog.set_level(logging.DEBUG)
    resolve_one(servicenow, now)
    check = oauth_check(make_check, settings, clock)
    assert run(check) == []
    [token] = servicenow.issued  # learnt at run time: no option holds it

    # What an error page, a proxy or a library may echo back: the Agent's log handler formats every line of the
    # check's logger through `sanitize`, and warnings (events and `datadog-agent status`) go through it too.
    check.warning('echoed: Bearer %s', token)

    assert check.sanitize(f'echoed: Bearer {token}') == 'echoed: Bearer ********'
    assert token not in ''.join(check.warnings) and 'echoed: Bearer' in ''.join(check.warnings)

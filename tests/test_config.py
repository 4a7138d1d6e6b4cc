"""Every wrong option fails at start with a ConfigurationError naming it, and never echoes a secret."""

import json

import pytest

BASE = {'source': 'pagerduty', 'api_token': 'secret-pd-token-123', 'datadog_api_key': 'secret-dd-key-456'}


@pytest.mark.parametrize(
    'override, option',
    [
        ({'source': None}, 'source'),
        ({'source': 'victorops'}, 'source'),  # no such tool
        ({'api_token': None}, 'api_token'),
        ({'api_token': '   '}, 'api_token'),
        ({'api_token': 42}, 'api_token'),
        ({'api_url': 'api.pagerduty.com'}, 'api_url'),
        ({'api_url': 'ftp://api.pagerduty.com'}, 'api_url'),
        ({'api_url': 7}, 'api_url'),
        ({'datadog_api_url': 'not a url'}, 'datadog_api_url'),
        ({'initial_lookback': -1}, 'initial_lookback'),
        ({'initial_lookback': 0}, 'initial_lookback'),
        ({'initial_lookback': 'a day'}, 'initial_lookback'),
        ({'max_run_time': 0}, 'max_run_time'),
        ({'send_dora_failures': 'sometimes'}, 'send_dora_failures'),
        ({'send_events': [True]}, 'send_events'),
        ({'urgencies': ['critical']}, 'urgencies'),
        ({'urgencies': 'high'}, 'urgencies'),
        ({'service_ids': 'PABC123'}, 'service_ids'),
        ({'team_ids': [1, 2]}, 'team_ids'),
        ({'service_mapping': ['PABC123']}, 'service_mapping'),
        ({'service_mapping': {'PABC123': 'checkout'}}, 'service_mapping'),
        ({'service_mapping': {'PABC123': {'servce': 'checkout'}}}, 'service_mapping'),
        ({'tags': 'env:prod'}, 'tags'),
        ({'datadog_api_url': 'https://api.ddog-gov.com'}, 'send_dora_failures'),
        ({'datadog_api_key': None}, 'datadog_api_key'),
    ],
)
def test_wrong_option_fails_at_start_naming_it(make_check, override, option):
    instance = {key: value for key, value in {**BASE, **override}.items() if value is not None}
    check = make_check(instance)

    error = check.run()

    assert error, f'{override} was accepted'
    [report] = json.loads(error)
    assert 'ConfigurationError' in report['traceback']
    assert option in report['message']
    assert 'secret-pd-token-123' not in error and 'secret-dd-key-456' not in error


def test_gov_site_is_refused_with_a_reason(make_check, datadog_agent):
    datadog_agent._config['site'] = 'ddog-gov.com'
    instance = {key: value for key, value in BASE.items()}

    [report] = json.loads(make_check(instance).run())

    assert 'DORA Metrics is not available on api.ddog-gov.com' in report['message']
    assert 'send_dora_failures: false' in report['message']


def test_gov_site_runs_without_dora_failures(make_check, datadog_agent):
    datadog_agent._config['site'] = 'ddog-gov.com'
    instance = {**BASE, 'send_dora_failures': False, 'api_url': 'http://127.0.0.1:9', 'timeout': 1}

    check = make_check(instance)
    assert check.run() == ''
    assert any('cannot reach' in warning for warning in check.warnings)


def test_datadog_api_url_and_key_default_to_the_agents(make_check, datadog_agent):
    datadog_agent._config.update(site='datadoghq.eu', api_key='agent-key-789')
    instance = {key: value for key, value in BASE.items() if key != 'datadog_api_key'}
    check = make_check(instance)
    check.load_configuration_models()

    dora = check._dora_api()

    assert dora.http._base_url == 'https://api.datadoghq.eu'
    assert dora.http._headers['DD-API-KEY'] == 'agent-key-789'


def test_cursor_scope_ignores_tags_and_interval_but_not_filters(make_check):
    def cache_id(**override):
        check = make_check({**BASE, **override})
        check.load_configuration_models()
        return check.persistent_cache_id()

    base = cache_id()
    assert cache_id(tags=['a:b'], min_collection_interval=300, service_mapping={'X': {'service': 'y'}}) == base
    assert cache_id(send_events=False, env='staging', max_run_time=5) == base
    for scoped in (
        {'service_ids': ['P1']},
        {'team_ids': ['T1']},
        {'urgencies': ['high']},
        {'api_url': 'https://api.eu.pagerduty.com'},
    ):
        assert cache_id(**scoped) != base, scoped


@pytest.mark.parametrize(
    'source, option, owner',
    [
        ('rootly', 'urgencies', 'pagerduty'),
        ('pagerduty', 'restored_at', 'rootly'),
        ('firehydrant', 'service_field', 'incident_io'),
    ],
)
def test_an_option_of_another_tool_fails_at_start_naming_it(make_check, source, option, owner):
    value = ['high'] if option == 'urgencies' else 'mitigated' if option == 'restored_at' else 'Affected services'
    check = make_check({'source': source, 'api_token': 'secret-token-xyz', 'send_dora_failures': False, option: value})

    error = check.run()

    assert f'`{option}`' in error and owner in error and f'source: {source}' in error


@pytest.mark.parametrize(
    'typo, message',
    [
        ({'severity': ['sev1']}, '`severity` (did you mean `severities`?)'),
        ({'service_id': ['PABC123']}, '`service_id` (did you mean `service_ids`?)'),
        ({'foo': 'bar'}, 'unknown option: `foo`'),
        ({'foo': 'bar', 'initial_lookbak': 60}, 'unknown options: `foo`, `initial_lookbak` (did you mean'),
    ],
)
def test_an_unknown_option_is_a_configuration_error_naming_it_and_the_nearest(make_check, typo, message):
    error = make_check({**BASE, **typo}).run()

    assert error, f'{typo} was accepted'
    [report] = json.loads(error)
    assert 'ConfigurationError' in report['traceback'] and message in report['message']
    assert 'secret-pd-token-123' not in error and 'secret-dd-key-456' not in error


# What any Agent check takes: the spec templates' options (in the config model), the Agent's reserved fields.
EVERY_CHECK_TAKES = {
    'tags': ['owner:sre'],
    'service': 'dora',
    'min_collection_interval': 60,
    'empty_default_hostname': True,
    'metric_patterns': {'include': ['dora.*']},
    'disable_generic_tags': True,
    'enable_legacy_tags_normalization': False,
    'timeout': 5,
    'tls_verify': True,
    'skip_proxy': True,
    'proxy': {'https': 'http://proxy:3128'},
    'headers': {'X-Team': 'sre'},
    'persist_connections': True,
    'name': 'pagerduty-prod',
    'namespace': 'prod',
    'no_index': True,
    'loader': 'python',
}


def test_every_option_any_agent_check_takes_is_accepted(make_check):
    check = make_check({**BASE, **EVERY_CHECK_TAKES})

    check.run_check_initializations()  # raises a ConfigurationError on an option it does not know

    assert check.config.source == 'pagerduty'


def test_every_option_of_the_spec_is_known(make_check):
    """The known options come from the config model, which scripts/sync_config.py generates from the spec."""
    import yaml

    from datadog_checks.dora_incidents.options import known_options

    spec = yaml.safe_load(open('assets/configuration/spec.yaml'))
    named = set()  # the options the spec itself declares (each template's too, through the model)

    def collect(options):
        for option in options:
            if 'name' in option:
                named.add(option['name'])

    for file in spec['files']:
        for section in file['options']:
            if section.get('template') == 'instances':
                collect(section['options'])
    assert named and named <= known_options()

"""The check's own health, per source: one failing instance on a host is never hidden by a working one."""

import json
import re
from pathlib import Path

import pytest

from datadog_checks.dora_incidents.outputs import SOURCE_CAN_CONNECT

from .common import ago

ROOT = Path(__file__).resolve().parents[1]
HEALTH = re.compile(r'dora\.check\.[a-z_.]+')


def test_every_health_metric_carries_its_source(make_check, run, instance, pagerduty, intake, now, aggregator):
    incident = pagerduty.trigger('PCHKOUT', ago(now, hours=2))
    pagerduty.resolve(incident, ago(now, hours=1))

    run(make_check({**instance, 'mark_change_failures': True, 'datadog_app_key': intake.app_key}))

    health = [name for name in aggregator.metric_names if name.startswith('dora.check.')]
    assert len(health) >= 6
    for name in health:
        for metric in aggregator.metrics(name):
            assert 'source:pagerduty' in metric.tags, (name, metric.tags)


def test_an_unreachable_rootly_is_not_hidden_by_a_working_pagerduty(make_check, instance, pagerduty, aggregator):
    make_check(instance).run()
    rootly = {'source': 'rootly', 'api_token': 'rootly-token', 'api_url': 'http://127.0.0.1:9', 'timeout': 2}
    make_check({**rootly, 'datadog_api_url': instance['datadog_api_url'], 'send_dora_failures': False}).run()

    by_source = {
        next(tag for tag in metric.tags if tag.startswith('source:')): metric.value
        for metric in aggregator.metrics(SOURCE_CAN_CONNECT)
    }
    assert by_source == {'source:pagerduty': 1, 'source:rootly': 0}


@pytest.mark.parametrize('path', sorted((ROOT / 'assets/monitors').glob('*.json')), ids=lambda p: p.stem)
def test_health_monitors_group_by_host_and_source(path):
    definition = json.loads(path.read_text())['definition']
    if HEALTH.search(definition['query']):
        assert 'by {host,source}' in definition['query'], definition['query']
        assert '{{source.name}}' in definition['name']

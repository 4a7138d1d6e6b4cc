"""What Datadog users look at: config example and models follow the spec; dashboard and monitors are valid."""

import ast
import csv
import json
import re
from pathlib import Path

import pytest
from datadog_api_client import Configuration

from datadog_checks.dora_incidents.sources import SOURCES
from datadog_api_client.model_utils import validate_and_convert_types
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'datadog_checks' / 'dora_incidents'
METADATA = {row['metric_name']: row for row in csv.DictReader((ROOT / 'metadata.csv').open())}
# Datadog's own DORA Metrics metric, which the dashboard divides by; the check does not emit it.
EXTERNAL_METRICS = {'dora.deployments.count'}
METRIC_IN_QUERY = re.compile(r'(?:avg|sum|min|max):([a-z_][a-z0-9_.]*)\{')


def generated(consumer_name):
    from datadog_checks.dev.tooling.configuration import ConfigSpec
    from datadog_checks.dev.tooling.configuration import consumers

    spec = ConfigSpec((ROOT / 'assets/configuration/spec.yaml').read_text(), source='dora_incidents', version='0')
    spec.load()
    assert spec.errors == []
    return getattr(consumers, consumer_name)(spec.data).render()


def test_conf_yaml_example_is_generated_from_the_spec():
    [(contents, errors)] = generated('ExampleConsumer').values()
    assert errors == []
    assert contents == (PACKAGE / 'data' / 'conf.yaml.example').read_text(), (
        'run `ddev -x validate config -s dora_incidents`'
    )


def test_root_conf_yaml_example_is_the_packaged_one():
    assert (ROOT / 'conf.yaml.example').read_text() == (PACKAGE / 'data' / 'conf.yaml.example').read_text()


def test_config_models_are_generated_from_the_spec():
    [files] = generated('ModelConsumer').values()
    for name, (contents, errors) in files.items():
        assert errors == []
        if name == 'validators.py':
            continue  # generated once, then hand-written
        committed = (PACKAGE / 'config_models' / name).read_text()
        # Same code, whatever the formatting and the header comment.
        assert ast.dump(ast.parse(contents)) == ast.dump(ast.parse(committed)), f'{name}: run `ddev -x validate models`'


def queried_metrics(document) -> set:
    return set(METRIC_IN_QUERY.findall(json.dumps(document)))


def test_dashboard_is_a_valid_datadog_dashboard_over_documented_metrics():
    document = json.loads((ROOT / 'assets/dashboards/dora_incidents_overview.json').read_text())

    dashboard = validate_and_convert_types(document, (Dashboard,), ['dashboard'], True, True, Configuration())

    assert dashboard.title == 'DORA incidents overview'
    assert {variable.name for variable in dashboard.template_variables} == {'service', 'team', 'env', 'source'}
    [source] = [variable for variable in dashboard.template_variables if variable.name == 'source']
    assert set(source.available_values) == set(SOURCES), 'the `source` variable must offer every source'
    metrics = queried_metrics(document)
    assert metrics - EXTERNAL_METRICS <= set(METADATA), metrics - EXTERNAL_METRICS - set(METADATA)
    assert set(METADATA) <= metrics, f'not on the dashboard: {set(METADATA) - metrics}'


@pytest.mark.parametrize('path', sorted((ROOT / 'assets/monitors').glob('*.json')), ids=lambda p: p.stem)
def test_monitors_are_valid_datadog_monitors_over_documented_metrics(path):
    document = json.loads(path.read_text())

    monitor = validate_and_convert_types(document['definition'], (Monitor,), ['monitor'], True, True, Configuration())

    assert str(monitor.type) == 'query alert'
    assert queried_metrics(document['definition']) and queried_metrics(document['definition']) <= set(METADATA)


def test_manifest_points_at_files_that_exist():
    manifest = json.loads((ROOT / 'manifest.json').read_text())
    integration = manifest['assets']['integration']
    paths = [
        integration['configuration']['spec'],
        integration['metrics']['metadata_path'],
        integration['service_checks']['metadata_path'],
        *manifest['assets']['dashboards'].values(),
        *manifest['assets']['monitors'].values(),
    ]
    assert all((ROOT / path).is_file() for path in paths)
    assert integration['metrics']['check'] in METADATA
    assert manifest['manifest_version'] == '2.0.0'
    assert len(list((ROOT / 'assets/monitors').glob('*.json'))) == len(manifest['assets']['monitors'])


def test_metadata_rows_are_complete():
    for name, row in METADATA.items():
        assert row['metric_type'] in ('gauge', 'count', 'rate'), name
        assert row['description'] and row['integration'] == 'dora_incidents', name


def test_the_configuration_reference_is_generated_from_the_spec():
    import runpy

    generator = runpy.run_path(str(ROOT / 'scripts' / 'config_reference.py'))
    page = (ROOT / 'docs' / 'configuration.md').read_text()
    assert generator['page_with_reference'](page) == page, 'run `python scripts/config_reference.py --write`'
    assert '`initial_lookback` | integer | `86400`' in page

"""Every tool in the registry (`SOURCES`) is a whole unit: its module and class, its simulator, its API description,
its options in the configuration spec, its value on the dashboard and its page in docs/sources/, linked from the
README. A tool missing any of them fails here by name.
"""

import inspect
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datadog_checks.dora_incidents.sources import SOURCES, Source, source_class
from loopback.simulators import SIMULATORS, make_simulator

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / 'assets' / 'configuration' / 'spec.yaml').read_text())
DASHBOARD = json.loads((ROOT / 'assets' / 'dashboards' / 'dora_incidents_overview.json').read_text())
README = (ROOT / 'README.md').read_text()
# "(pagerduty only)", "(incident_io, jira)", "(github only, required)": the tools an option belongs to.
MARKER = re.compile(r'\(([a-z_]+(?:, [a-z_]+)*)(?: only)?(?:, required)?\)')


def spec_options(node=SPEC) -> dict[str, dict]:
    """Every option the spec declares, by name (templates' options included)."""
    found = {}
    if isinstance(node, dict):
        if 'name' in node and 'value' in node:
            found[node['name']] = node
        for child in node.values():
            found.update(spec_options(child))
    elif isinstance(node, list):
        for child in node:
            found.update(spec_options(child))
    return found


OPTIONS = spec_options()


def marked_tools(option: str) -> set[str] | None:
    """The tools an option's description says it belongs to; None when it is not marked."""
    match = MARKER.match(OPTIONS[option].get('description', ''))
    return set(match.group(1).split(', ')) if match else None


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_module_holds_a_concrete_source_of_that_name(name):
    module, _ = SOURCES[name]
    cls = source_class(name)

    assert issubclass(cls, Source) and not inspect.isabstract(cls), f'{name}: {cls.__name__} leaves methods abstract'
    assert cls.name == name
    assert cls.__module__ == f'datadog_checks.dora_incidents.sources.{module}'
    assert cls.display_name and isinstance(cls.default_api_url, str)
    assert cls.scope_options <= cls.options, f'{name}: a scope option that is not one of its options'


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_tool_has_its_simulator(name):
    assert (ROOT / 'loopback' / f'{name}.py').is_file()
    assert name in SIMULATORS
    with make_simulator(name) as simulator:
        assert simulator.source == name


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_tool_has_its_api_description_holding_the_operations_it_uses(name):
    document = json.loads((ROOT / 'loopback' / 'specs' / f'{name}.json').read_text())
    operations = source_class(name).api_description.get('operations')

    assert operations, f'{name}: `api_description` names no operations'
    missing = [(method, path) for method, path in operations if method.lower() not in document['paths'].get(path, {})]
    assert missing == [], f'loopback/specs/{name}.json lacks operations the tool uses (scripts/derive_specs.py)'


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_configuration_spec_has_the_tool_and_its_options(name):
    assert name in OPTIONS['source']['value']['enum']
    for option in sorted(source_class(name).options):
        assert option in OPTIONS, f'{name}: `{option}` is not in assets/configuration/spec.yaml'
        tools = marked_tools(option)
        assert tools is None or name in tools, f'`{option}` is marked for {sorted(tools)}, not for {name}'


def test_the_spec_offers_no_tool_the_registry_lacks_and_marks_no_option_of_another_tool():
    assert set(OPTIONS['source']['value']['enum']) == set(SOURCES)
    owners: dict[str, set[str]] = {}
    for name in SOURCES:
        for option in source_class(name).options:
            owners.setdefault(option, set()).add(name)
    for option in OPTIONS:
        tools = marked_tools(option)
        if tools is not None:
            assert tools == owners.get(option), (
                f'`{option}` is marked for {sorted(tools)}, read by {owners.get(option)}'
            )


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_dashboard_offers_the_tool_as_a_source_value(name):
    [variable] = [v for v in DASHBOARD['template_variables'] if v['name'] == 'source']
    assert name in variable['available_values']


@pytest.mark.parametrize('name', sorted(SOURCES))
def test_the_tool_has_its_doc_page_linked_from_the_readme(name):
    page = ROOT / 'docs' / 'sources' / f'{name}.md'

    assert page.is_file(), f'{name}: docs/sources/{name}.md is missing (CONTRIBUTING.md, "The tool\'s page")'
    title = page.read_text().partition('\n')[0]
    assert f'`source: {name}`' in title, f'docs/sources/{name}.md: its title does not name `source: {name}`'
    assert f'](docs/sources/{name}.md)' in README, f'README.md does not link docs/sources/{name}.md'


def test_every_doc_page_of_a_tool_is_a_tool_of_the_registry():
    pages = {page.stem for page in (ROOT / 'docs' / 'sources').glob('*.md')}
    assert pages <= set(SOURCES), f'docs/sources/ has pages of tools that are not in SOURCES: {pages - set(SOURCES)}'


def test_what_is_generated_from_the_registry_and_the_pages_is_in_sync():
    # The README's and docs/design.md's tool tables, the spec's `source` enum, the dashboard's values and the
    # package metadata are written by scripts/sync_tools.py: a tool needs no hand edit in any of them.
    result = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'sync_tools.py'), '--check'],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_the_sync_names_what_is_stale(tmp_path):
    sync = runpy.run_path(str(ROOT / 'scripts' / 'sync_tools.py'))
    readme = README.replace('| [Rootly](docs/sources/rootly.md)', '| [Rootly, by hand](docs/sources/rootly.md)')

    assert sync['between_markers'](readme, sync['tables']()[0], 'README.md') == README
    stale = sync['pyproject']((ROOT / 'pyproject.toml').read_text().replace('"rootly", ', ''))
    assert '"rootly"' in stale


def test_the_simulators_stay_within_1_3_times_the_lines_of_the_tool_modules():
    # Issue 20's budget: a simulator keeps only its vendor's semantics; the pipeline, rate limits, lag and
    # driver defaults live once in loopback/core.py. A simulator growing past it is the signal to share more.
    def lines(path: Path) -> int:
        return len(path.read_text().splitlines())

    simulators = sum(lines(ROOT / 'loopback' / f'{name}.py') for name in SOURCES)
    modules = sum(
        lines(ROOT / 'datadog_checks' / 'dora_incidents' / 'sources' / f'{SOURCES[name][0]}.py') for name in SOURCES
    )
    assert simulators <= 1.3 * modules, (
        f'simulators {simulators} lines, tool modules {modules}: {simulators / modules:.2f}x'
    )

"""The quick-start demo shows what the README says it shows, for every simulated tool."""

import re

import pytest

from datadog_checks.dora_incidents.sources import SOURCES
from loopback import demo
from loopback.simulators import make_simulator


@pytest.mark.parametrize('source', list(SOURCES))
def test_the_demo_shows_versions_filtered_kinds_units_and_nothing_sent_again(source, capsys, datadog_agent):
    demo.main(source)
    out = capsys.readouterr().out

    first, second = out.split('=== Second run')
    # The marked deployment and its remediation, by version.
    assert re.search(
        r'checkout_api v42 in \w+ \(sim-deployment-\d+\): change failure, remediated by the rollback to v41', first
    )
    assert re.search(r'checkout_api v42 .*; found by the time window$', first, re.MULTILINE)
    # Search's outage: the deployment the tool names (s7), beside the window's pick (s8) where it names none.
    by_evidence = source in ('pagerduty', 'firehydrant', 'servicenow', 'jira')
    expected = (
        "search s7 .*; found by the incident tool's evidence"
        if by_evidence
        else 'search s8 .*; found by the time window'
    )
    assert re.search(f'^  {expected}$', first, re.MULTILINE)
    # Each kind that is not a failure, described and not reported.
    filtered = re.findall(r'^  \S+: (.+): (not reported|REPORTED \(a bug\))$', first, re.MULTILINE)
    assert [reason for reason, _ in filtered] == list(make_simulator(source).not_failures)
    assert {outcome for _, outcome in filtered} == {'not reported'}
    # Units on values.
    assert re.search(r'dora\.time_to_restore +3600 s \(1h\)', first) and '1 incident(s)' in first
    assert re.search(r'dora\.check\.cursor\.lag +\d+\.\d s', first)
    # The second run re-sends nothing and marks nothing again.
    assert 'DORA metrics: none' in second and 'DORA failures: none sent' in second
    assert 'none (nothing marked again)' in second and 'Sent again: nothing' in second

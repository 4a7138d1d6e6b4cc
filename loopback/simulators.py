"""Every source's simulator by `source:` value, each checking what it serves against the derived description."""

from __future__ import annotations

from .datadog_incidents import DatadogIncidentsSimulator
from .firehydrant import FireHydrantSimulator
from .github import GitHubSimulator
from .incident_io import IncidentIoSimulator
from .jira import JiraSimulator
from .pagerduty import PagerDutySimulator
from .rootly import RootlySimulator
from .servicenow import ServiceNowSimulator
from .spec import pagerduty_request_problem
from .splunk_oncall import SplunkOnCallSimulator

SIMULATORS = {
    'pagerduty': lambda: PagerDutySimulator(spec_validator=pagerduty_request_problem),
    'rootly': RootlySimulator,
    'firehydrant': FireHydrantSimulator,
    'incident_io': IncidentIoSimulator,
    'servicenow': ServiceNowSimulator,
    'jira': JiraSimulator,
    'github': GitHubSimulator,
    'datadog_incidents': DatadogIncidentsSimulator,
    'splunk_oncall': SplunkOnCallSimulator,
}


def make_simulator(source: str):
    return SIMULATORS[source]()

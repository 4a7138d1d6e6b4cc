"""The PagerDuty backlog that livelocked: more log entries than one `max_run_time` can read, bunched so that
cutting the window alone takes more than a run. Each run goes on where the last stopped (the cursor keeps
the window as cut so far and the next page), so everything is counted, once, within the budget."""

from .common import LATENCY, ago, counted, restores, run_on_virtual_clock, stored_cursor


def test_a_bunched_pagerduty_backlog_larger_than_a_budget_is_read_over_runs(
    aggregator, datadog_agent, make_check, run, instance, pagerduty, now
):
    incidents = []
    for n in range(3_000):  # 9,000 log entries: triggers and notifications all in two seconds
        incident = pagerduty.trigger('PSEARCH', ago(now, hours=21))
        pagerduty.resolve(incident, ago(now, hours=20, seconds=-n * 20))
        incidents.append(incident)
    instance.update(max_run_time=1, send_events=False, send_dora_failures=False)

    per_run, stopped = run_on_virtual_clock(make_check, run, pagerduty, instance, aggregator, 3_000, most=60)

    assert stopped >= 10 and max(per_run) * LATENCY <= 1 + LATENCY, per_run
    assert sorted(restores(aggregator)) == sorted(incidents) and counted(aggregator) == 3_000
    assert all(len(values) == 1 for values in restores(aggregator).values())
    assert stored_cursor(datadog_agent)['resume'] is None

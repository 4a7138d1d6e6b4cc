"""A backlog larger than one run's budget spreads over several runs, and is reported exactly once."""

from .common import ago, counted, dora_ids, restores, stored_cursor


def test_a_large_first_run_spreads_over_runs_within_the_budget(
    aggregator, datadog_agent, make_check, instance, pagerduty, intake, now
):
    incidents = []
    for n in range(3_000):
        incident = pagerduty.trigger('PSEARCH', ago(now, hours=20, seconds=-n * 20))
        pagerduty.resolve(incident, ago(now, hours=19, seconds=-n * 20))
        incidents.append(incident)
    instance.update(max_run_time=1, send_events=False)

    stopped_for_budget, lags, watermarks = 0, [], []
    for _ in range(30):
        check = make_check(instance)
        assert check.run() == ''
        stopped_for_budget += any('Stopped after `max_run_time`' in w for w in check.warnings)
        lags.append(aggregator.metrics('dora.check.cursor.lag')[-1].value)
        watermarks.append(stored_cursor(datadog_agent)['watermark'])
        if not check.warnings:
            break

    assert stopped_for_budget >= 2, 'the backlog fit in one run: the budget was never exercised'
    # The cursor never moves back; a run whose budget went on sending the outbox may not move it at all.
    assert watermarks == sorted(watermarks) and lags[-1] < 5, 'the cursor must move forward until caught up'
    assert sorted(restores(aggregator)) == sorted(incidents)
    assert all(len(values) == 1 for values in restores(aggregator).values())
    assert counted(aggregator) == 3_000
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}
    assert stored_cursor(datadog_agent)['watermark'] is not None

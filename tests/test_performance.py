"""Performance behaviour (not timing): kept-alive connections, PagerDuty requests near the floor, concurrent DORA
posts that keep every outbox guarantee, and the run budget with network latency. `python -m loopback.perf`
measures the timings.

Nothing here depends on how fast this machine is: concurrency is shown by requests held until they overlap,
the run budget on a virtual clock that only answered requests advance, and a rate-limit pause by what can and
cannot arrive inside it (a slower machine only moves arrivals later).
"""

import json
import math
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from datadog_checks.dora_incidents.datadog import DORA_PATH, DatadogApi, Write, outbox, pool
from datadog_checks.dora_incidents.datadog.client import DatadogHttp
from loopback.intake import DatadogIntake
from loopback.server import Fault

from .common import NO_DEADLINE, ago, counted, dora_ids, restores

PATH = '/api/v2/dora/failure'


def backlog(pagerduty, now, count, over=timedelta(hours=20)):
    """`count` incidents opened before the lookback and resolved evenly over `over`: `count` log entries in the window."""
    incidents = []
    for n in range(count):
        incident = pagerduty.trigger('PCHKOUT', ago(now, hours=30, seconds=n))
        pagerduty.resolve(incident, now - over + (n + 1) * over / (count + 1))
        incidents.append(incident)
    return incidents


def posts_per_run(intake, before: int) -> Counter:
    return Counter(body['data']['attributes']['id'] for body in intake.failures[before:])


class VirtualClock:
    """`time.monotonic` for the check: it advances only by `cost` per request a loopback server answers."""

    def __init__(self, cost: float):
        self.cost = cost
        self._now = 1_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def charge(self, server, monkeypatch) -> None:
        serve = server._serve

        def charged(request):
            answer = serve(request)
            with self._lock:
                self._now += self.cost
            return answer

        monkeypatch.setattr(server, '_serve', charged)


class OverlapIntake(DatadogIntake):
    """Holds each post after the first until another is in flight: only a pool that posts concurrently gets
    `peak` to 2. (The first is answered at once: the pool opens its window once Datadog has answered.)"""

    LIVENESS = 60  # seconds: a check that never overlaps posts has one held this long, then none, and fails

    def __init__(self):
        super().__init__()
        self.in_flight = self.peak = self.served = 0
        self.gave_up = False
        self._overlap = threading.Condition()

    def _serve(self, request):
        with self._overlap:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self._overlap.notify_all()
            if self.served and self.peak < 2 and not self.gave_up:
                self.gave_up = not self._overlap.wait_for(lambda: self.peak >= 2, timeout=self.LIVENESS)
        try:
            return super()._serve(request)
        finally:
            with self._overlap:
                self.in_flight -= 1
                self.served += 1


class TimedIntake(DatadogIntake):
    """Records when each request arrived, and what it was answered."""

    def __init__(self):
        super().__init__()
        self.arrivals: list[tuple[float, int]] = []

    def _serve(self, request):
        arrived = time.monotonic()
        response, fault = super()._serve(request)
        with self._lock:
            self.arrivals.append((arrived, response.status))
        return response, fault


@pytest.fixture
def timed_intake():
    with TimedIntake() as server:
        yield server
    assert server.problems == []


# -- keep-alive ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('concurrency', [1, 4])
def test_connections_are_kept_alive_and_bounded_by_the_concurrency(
    make_check, run, instance, pagerduty, intake, now, concurrency
):
    incidents = backlog(pagerduty, now, 1_500)
    instance['dora_concurrency'] = concurrency
    check = make_check(instance)

    run(check)
    later = pagerduty.trigger('PCHKOUT', ago(now, hours=30))
    pagerduty.resolve(later, ago(now, seconds=1))
    run(check)  # a second run reuses the first run's connections

    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in [*incidents, later]}
    assert len(pagerduty.requests) > 15 and pagerduty.connections == 1
    assert len(intake.requests) == 1_501 and intake.connections <= concurrency + 1


def test_concurrent_posts_use_several_connections(make_check, run, instance, pagerduty, now):
    """Otherwise the bound above would hold for a check that never posts concurrently."""
    incidents = backlog(pagerduty, now, 200)
    with OverlapIntake() as intake:
        run(make_check({**instance, 'datadog_api_url': intake.url, 'dora_concurrency': 4}))

    assert intake.peak >= 2 and 2 <= intake.connections <= 5
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents} and intake.problems == []


# -- PagerDuty requests --------------------------------------------------------------------------------------
@pytest.mark.parametrize('count', [2_500, 4_321])
def test_pagerduty_requests_stay_near_the_floor(make_check, run, instance, pagerduty, intake, now, aggregator, count):
    incidents = backlog(pagerduty, now, count)
    check = make_check({**instance, 'send_events': False, 'send_dora_failures': False})

    run(check)

    floor = math.ceil(count / 100)
    assert len(pagerduty.requests) <= 1.25 * floor + 2, (len(pagerduty.requests), floor)
    assert sorted(restores(aggregator)) == sorted(incidents)

    before = len(pagerduty.requests)
    run(check)  # steady state: nothing new, one request
    assert len(pagerduty.requests) - before == 1


def test_bunched_resolutions_are_cut_again_and_all_read(make_check, run, instance, pagerduty, intake, now, aggregator):
    """Most of the window's entries in one hour: the even-spread estimate is wrong, the cut window is cut again."""
    bunched = backlog(pagerduty, now - timedelta(hours=3), 2_400, over=timedelta(hours=1))
    spread = backlog(pagerduty, now, 300)

    run(make_check({**instance, 'send_events': False, 'send_dora_failures': False}))

    assert set(restores(aggregator)) == set(bunched + spread) and counted(aggregator) == 2_700
    assert len(pagerduty.requests) <= 1.25 * 27 + 2 + 3  # a few more probes than evenly spread entries need


# -- concurrent DORA posts keep the outbox semantics ---------------------------------------------------------
def test_each_failure_is_posted_once_per_run(make_check, run, instance, pagerduty, intake, now, aggregator):
    incidents = backlog(pagerduty, now, 800)
    intake.latency = 0.002

    run(make_check(instance))

    assert max(posts_per_run(intake, 0).values()) == 1
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)


def test_a_400_mid_run_is_dropped_with_a_warning_and_the_rest_is_sent(
    make_check, run, instance, pagerduty, intake, now, aggregator
):
    incidents = backlog(pagerduty, now, 300)
    intake.inject(Fault(status=400, body=b'{"errors":["bad"]}', path=PATH, skip=150, times=3))

    warnings = run(make_check(instance))

    assert len([w for w in warnings if 'Datadog rejected' in w]) == 3
    assert len(set(dora_ids(intake))) == 297 and len(intake.failures) == 297
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
    assert counted(aggregator) == 300 == len(incidents)


def test_an_outage_mid_run_queues_the_rest_and_the_next_run_sends_it_once(
    make_check, run, instance, pagerduty, intake, now, aggregator, monkeypatch
):
    monkeypatch.setattr(outbox, 'MIN_BACKOFF', 0)
    incidents = backlog(pagerduty, now, 400)
    intake.inject(Fault(status=503, path=PATH, skip=100))

    warnings = run(make_check(instance))
    first = len(intake.failures)

    assert any('wait to be sent' in w for w in warnings)
    assert max(posts_per_run(intake, 0).values()) == 1
    pending = aggregator.metrics('dora.check.outbox.pending')[-1].value
    assert pending == 400 - len(set(dora_ids(intake))) > 0  # everything not accepted waits in the outbox

    aggregator.reset()
    run(make_check(instance))  # an Agent restart: the outbox comes from the persistent cache

    assert max(posts_per_run(intake, first).values()) == 1
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)


def test_a_429_with_a_reset_pauses_the_whole_pool_then_sends_everything_in_the_run(
    make_check, run, instance, pagerduty, timed_intake, now, aggregator, monkeypatch
):
    incidents = backlog(pagerduty, now, 200)
    timed_intake.latency = 0.05
    headers = {'X-RateLimit-Reset': '1', 'X-RateLimit-Period': '10', 'X-RateLimit-Limit': '1000'}
    timed_intake.inject(Fault(status=429, headers=headers, path=PATH, skip=40))
    instance.update(datadog_api_url=timed_intake.url, dora_concurrency=4)
    paused, slow_down = [], pool.WritePool._slow_down

    def noted(self, wait):  # when the pool read the 429 and paused (no post can start meanwhile: the lock is held)
        paused.append(time.monotonic())
        slow_down(self, wait)

    monkeypatch.setattr(pool.WritePool, '_slow_down', noted)

    warnings = run(make_check(instance))

    assert warnings == []
    assert set(dora_ids(timed_intake)) == {f'pagerduty:{i}' for i in incidents}
    aggregator.assert_metric('dora.check.outbox.pending', value=0)
    assert [status for _, status in timed_intake.arrivals].count(429) == 1
    # Inside the reset's second from the pause only the posts already in flight then can arrive, at most 4 - 1
    # (measured from when the check read the 429, not when Datadog answered it: a busy machine reads it late).
    [start] = paused
    inside = [arrived for arrived, _ in timed_intake.arrivals if start < arrived < start + 1]
    assert len(inside) <= 4 - 1, 'a post started during the pause'
    assert any(arrived >= start + 1 for arrived, _ in timed_intake.arrivals)


def test_a_429_with_a_reset_past_the_run_queues_for_that_reset_not_a_fixed_backoff(
    make_check, run, instance, pagerduty, intake, now, aggregator, datadog_agent
):
    backlog(pagerduty, now, 50)
    intake.inject(Fault(status=429, headers={'X-RateLimit-Reset': '300'}, path=PATH, skip=10))
    instance['max_run_time'] = 120  # the reset is past the run; the 11th post is not (however busy the machine)

    before = time.time()
    warnings = run(make_check(instance))
    after = time.time()

    assert any('wait to be sent' in w for w in warnings)
    waiting = stored_outbox(datadog_agent)
    aggregator.assert_metric('dora.check.outbox.pending', value=len(waiting))
    assert len(waiting) == 50 - len(set(dora_ids(intake))) > 0
    # Due at Datadog's reset, the rate-limited write and every write held back after it: not in a fixed 30 s.
    assert all(before + 300 <= item['next_at'] <= after + 300 for item in waiting)
    assert [item['attempts'] for item in waiting].count(1) == 1


def test_the_deadline_is_respected_with_latency(make_check, instance, pagerduty, intake, now, aggregator, monkeypatch):
    """Latency on a virtual clock: every answered request costs 10 ms of the check's `time.monotonic`."""
    incidents = backlog(pagerduty, now, 1_200)
    clock = VirtualClock(cost=0.01)
    for server in (pagerduty, intake):
        clock.charge(server, monkeypatch)
    monkeypatch.setattr(time, 'monotonic', clock)
    instance.update(max_run_time=1, dora_concurrency=4, send_events=False)

    seconds, before = [], 0
    for _ in range(60):
        check = make_check(instance)
        check.monotonic = clock  # the check's own clock (its reads' deadline), bound before the patch
        started = clock()
        assert check.run() == ''
        seconds.append(clock() - started)
        assert max(posts_per_run(intake, before).values(), default=1) == 1  # never twice within a run
        before = len(intake.failures)
        if not check.warnings:
            break

    # max_run_time, and then only what was in flight: a source read and `dora_concurrency` posts.
    assert len(seconds) > 2 and max(seconds) <= 1 + (1 + 4) * clock.cost + 1e-9, max(seconds)
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}
    assert all(len(values) == 1 for values in restores(aggregator).values()) and counted(aggregator) == 1_200


def test_sequential_with_concurrency_1(make_check, run, instance, pagerduty, intake, now):
    incidents = backlog(pagerduty, now, 100)
    intake.latency = 0.005

    run(make_check({**instance, 'dora_concurrency': 1}))

    assert intake.connections == 1
    assert dora_ids(intake) == [f'pagerduty:{i}' for i in incidents]  # in order, one after the other


# -- the pool itself -----------------------------------------------------------------------------------------
@pytest.fixture
def api(make_check, instance, intake):
    check = make_check({**instance, 'dora_concurrency': 8})
    check.load_configuration_models()
    return DatadogApi(check, intake.url, intake.api_key)


def failure(key: str, name: str) -> Write:
    body = {'data': {'attributes': {'id': key, 'name': name, 'started_at': 1, 'finished_at': 2, 'services': ['s']}}}
    return Write(key, 'POST', DORA_PATH, body, f'the DORA failure {key}')


def test_a_newer_write_of_the_same_target_lands_last(api, intake):
    intake.latency = 0.03
    api.begin(NO_DEADLINE)
    for n in range(20):
        api.send(failure(f'pagerduty:Q{n % 4:015d}', f'version {n}'))
    api.finish()

    held = intake.latest_by_id()
    assert {key: attributes['name'] for key, attributes in held.items()} == {
        f'pagerduty:Q{k:015d}': f'version {16 + k}' for k in range(4)
    }
    assert api.pending == 0


def test_memory_is_bounded_while_the_pool_is_slower_than_the_reader(api, intake):
    intake.latency = 0.01
    api.begin(NO_DEADLINE)
    peak = 0
    for n in range(400):
        api.send(failure(f'pagerduty:Q{n:015d}', 'x'))
        peak = max(peak, len(api.pool._queue))
    api.finish()

    assert peak <= pool.QUEUED_PER_WORKER * 8
    assert len(set(dora_ids(intake))) == 400


def test_a_crash_in_a_worker_is_raised_to_the_run_and_loses_nothing(
    make_check, instance, pagerduty, intake, now, monkeypatch
):
    incidents = backlog(pagerduty, now, 60)
    original, calls, lock = DatadogHttp.send, [], threading.Lock()

    def crashing(self, *args):
        with lock:
            calls.append(1)
            number = len(calls)
        answer = original(self, *args)
        if number == 5:
            raise RuntimeError('worker crashed')
        return answer

    check = make_check(instance)
    with monkeypatch.context() as patch:
        patch.setattr(DatadogHttp, 'send', crashing)
        assert 'worker crashed' in check.run()

    assert check.run() == ''  # the same check object: its cursor in memory has moved on, the outbox has the rest
    assert set(dora_ids(intake)) == {f'pagerduty:{i}' for i in incidents}


def stored_outbox(datadog_agent):
    slots = []
    for key in [key for key in datadog_agent._cache if '_dora_outbox_' in key]:
        slot = json.loads(datadog_agent._cache[key])
        slots.append((slot['sequence'], slot['document']['items']))
    return max(slots)[1]

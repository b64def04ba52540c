"""`/metrics` with `[server] workers = N` (radiusd.workers): the first worker serves
it and adds the other workers' own counters, which they publish as files; what is
read from the database is not added (it is already everyone's)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from radiusd.http import metrics
from radiusd.http.metrics import Figures, Histogram, own_figures
from radiusd.workers import Exchange


def figures(received: int, accepts: int, latencies: list[float]) -> Figures:
    hist = Histogram()
    for v in latencies:
        hist.observe(v)
    return Figures(counts=Counter({"auth.received": received}),
                   dropped=Counter({"queue_timeout": 1}),
                   replies=Counter({("auth", "nas-1", "access_accept"): accepts}),
                   latency={"auth": hist},
                   sms_refused=Counter({"per_nas_daily": 2}))


def test_figures_published_by_one_worker_are_read_back_by_another(tmp_path: Path) -> None:
    exchange = Exchange(tmp_path)
    exchange.publish(1, figures(10, 7, [0.001, 0.2]).to_json())
    exchange.publish(2, figures(5, 1, [0.003]).to_json())
    seen = [Figures.from_json(d) for d in exchange.others(0)]
    assert sorted(f.counts["auth.received"] for f in seen) == [5, 10]
    assert [Figures.from_json(d).counts["auth.received"] for d in exchange.others(1)] == [5]
    assert not list(tmp_path.glob("*.tmp"))  # written aside, then renamed


def test_the_first_worker_adds_everyones_counters_and_histograms() -> None:
    total = figures(10, 7, [0.001, 0.2])
    total.add(figures(5, 1, [0.003]))
    assert total.counts["auth.received"] == 15
    assert total.dropped["queue_timeout"] == 2
    assert total.replies[("auth", "nas-1", "access_accept")] == 8
    assert total.sms_refused["per_nas_daily"] == 4
    hist = total.latency["auth"]
    assert hist.count == 3 and abs(hist.sum - 0.204) < 1e-9
    lines = hist.lines("x", "")
    assert 'x_bucket{le="0.001"} 1' in lines and 'x_bucket{le="0.005"} 2' in lines
    assert 'x_bucket{le="0.25"} 3' in lines


def test_a_processs_own_figures_are_a_copy_that_does_not_move_on() -> None:
    counts: Counter[str] = Counter({"acct.received": 3})
    timer = metrics.RadiusTimer(inner=None)  # type: ignore[arg-type]
    timer.replies[("acct", "nas-1", "accounting_response")] = 3
    mine = own_figures(counts, Counter(), timer, Counter(), Counter())
    counts["acct.received"] += 1
    timer.replies[("acct", "nas-1", "accounting_response")] += 1
    mine.add(mine_copy := Figures.from_json(mine.to_json()))
    assert mine.counts["acct.received"] == 6  # 3 + 3, not 4 + 4
    assert mine_copy.replies[("acct", "nas-1", "accounting_response")] == 3


def test_rendered_metrics_show_the_added_up_figures() -> None:
    total = figures(10, 7, [0.001])
    total.add(figures(5, 1, [0.003]))
    text = metrics.render(total.counts, total.dropped,
                          metrics.as_timer(total, inner=None),  # type: ignore[arg-type]
                          metrics.HttpCounters(), metrics.Snapshot(), {"store": 1})
    assert 'radiusd_radius_received_total{port="auth"} 15' in text
    assert ('radiusd_radius_requests_total{port="auth",client="nas-1",code="access_accept"}'
            ' 8') in text
    assert 'radiusd_radius_request_duration_seconds_count{port="auth"} 2' in text

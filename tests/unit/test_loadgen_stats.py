"""The statistics behind `photodedup bench`, on inputs whose answers are known."""

from __future__ import annotations

import json
import math

import pytest

from photodedup.loadgen import stats as st


def test_percentiles_known_values() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    out = st.percentiles(list(reversed(values)), (0, 50, 90, 100))
    assert out == {"p0": 1.0, "p50": pytest.approx(5.5), "p90": pytest.approx(9.1), "p100": 10.0}
    assert st.percentiles([7.0], (99,)) == {"p99": 7.0}


def test_percentiles_names_and_empty_input() -> None:
    out = st.percentiles([0.0, 10.0])
    assert list(out) == ["p50", "p90", "p95", "p99"]
    assert out["p90"] == pytest.approx(9.0)
    assert all(math.isnan(v) for v in st.percentiles([]).values())
    with pytest.raises(ValueError):
        st.percentiles([1.0], (101,))


def test_batch_efficiency_and_mean_batch() -> None:
    assert st.mean_batch_size(960, 32) == 30.0
    assert st.batch_efficiency(30.0, 32) == pytest.approx(0.9375)
    assert st.batch_efficiency(32.0, 32) == 1.0
    assert math.isnan(st.mean_batch_size(5, 0))
    assert math.isnan(st.batch_efficiency(math.nan, 32))
    with pytest.raises(ValueError):
        st.batch_efficiency(1.0, 0)


def test_throughput_and_per_image() -> None:
    assert st.throughput(2000, 4.0) == 500.0
    assert math.isnan(st.throughput(10, 0.0))
    assert st.per_image_ms(0.5, 1000) == pytest.approx(0.5)
    assert math.isnan(st.per_image_ms(1.0, 0))


EXPOSITION_BEFORE = """\
# TYPE photodedup_items_total counter
photodedup_items_total{status="OK"} 100.0
# TYPE photodedup_inference_items_total counter
photodedup_inference_items_total{device="cpu"} 100.0
# TYPE photodedup_executions_total counter
photodedup_executions_total{device="cpu"} 10.0
# TYPE photodedup_queue_duration_seconds histogram
photodedup_queue_duration_seconds_bucket{le="+Inf"} 100.0
photodedup_queue_duration_seconds_count 100.0
photodedup_queue_duration_seconds_sum 1.0
# TYPE photodedup_inference_duration_seconds histogram
photodedup_inference_duration_seconds_bucket{device="cpu",le="+Inf"} 10.0
photodedup_inference_duration_seconds_count{device="cpu"} 10.0
photodedup_inference_duration_seconds_sum{device="cpu"} 0.5
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 3.0
"""

EXPOSITION_AFTER = """\
# TYPE photodedup_items_total counter
photodedup_items_total{status="OK"} 420.0
photodedup_items_total{status="INVALID_ARGUMENT"} 4.0
# TYPE photodedup_requests_total counter
photodedup_requests_total{code="OK",method="EmbedStream"} 2.0
# TYPE photodedup_inference_items_total counter
photodedup_inference_items_total{device="cpu"} 420.0
# TYPE photodedup_executions_total counter
photodedup_executions_total{device="cpu"} 20.0
# TYPE photodedup_queue_duration_seconds histogram
photodedup_queue_duration_seconds_bucket{le="+Inf"} 420.0
photodedup_queue_duration_seconds_count 420.0
photodedup_queue_duration_seconds_sum 2.6
# TYPE photodedup_inference_duration_seconds histogram
photodedup_inference_duration_seconds_bucket{device="cpu",le="+Inf"} 20.0
photodedup_inference_duration_seconds_count{device="cpu"} 20.0
photodedup_inference_duration_seconds_sum{device="cpu"} 1.5
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 3.8
"""


def test_server_split_from_two_scrapes() -> None:
    before = st.parse_prometheus(EXPOSITION_BEFORE)
    after = st.parse_prometheus(EXPOSITION_AFTER)
    split = st.server_split(before, after)
    assert split.items_ok == 320
    assert split.items_by_status == {"OK": 320, "INVALID_ARGUMENT": 4}
    assert split.inference_items == 320 and split.executions == 10
    assert split.mean_batch == 32.0
    assert split.queue_ms_per_image == pytest.approx(1000 * 1.6 / 320)
    assert split.inference_ms_per_batch == pytest.approx(100.0)
    assert split.cpu_seconds == pytest.approx(0.8)
    assert split.requests_by_code == {"EmbedStream:OK": 2}
    assert math.isnan(split.preprocess_ms_per_batch)  # absent from both scrapes


def test_merge_sums_servers() -> None:
    one = st.parse_prometheus(EXPOSITION_BEFORE)
    both = st.merge([one, one])
    assert st.total(both, "photodedup_executions_total") == 20.0
    assert st.total(both, "photodedup_executions_total", device="cpu") == 20.0
    assert st.total(both, "photodedup_executions_total", device="cuda:0") == 0.0


def test_json_safe_turns_nan_into_null() -> None:
    out = st.json_safe({"a": math.nan, "b": [1.0, math.inf], "c": {"d": 2}})
    assert json.loads(json.dumps(out, allow_nan=False)) == {"a": None, "b": [1.0, None], "c": {"d": 2}}


def test_machine_line_names_the_machine_and_versions() -> None:
    line = st.machine_line(("pytest", "no-such-package-xyz"))
    assert " cores, " in line and "Python " in line and "pytest " in line
    assert "no-such-package-xyz" not in line

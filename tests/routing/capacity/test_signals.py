"""Reading each engine's /metrics text: real vLLM pages, and the formats of SGLang and llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routing.capacity.signals import NotAReading, Reading, parse
from gateway.tools.standin import QueueingEngine

FIXTURES = Path(__file__).parents[2] / "fixtures" / "vllm"


def test_a_real_busy_vllm_page_gives_its_queue_running_and_cache() -> None:
    reading = parse("vllm", (FIXTURES / "metrics-generate-busy.txt").read_text())
    assert reading.waiting == 12
    assert reading.running == 8
    assert reading.kv_cache == pytest.approx(0.002930045171529727)


def test_a_real_idle_vllm_page_reads_empty() -> None:
    assert parse("vllm", (FIXTURES / "metrics-generate.txt").read_text()) == Reading(0, 0, 0.0)


def test_the_by_reason_breakdown_is_not_counted_twice() -> None:
    text = (FIXTURES / "metrics-generate-busy.txt").read_text()
    assert "vllm:num_requests_waiting_by_reason" in text
    assert parse("vllm", text).waiting == 12  # not 24: only the total is summed


def test_several_engines_sum_their_queues_and_max_their_cache() -> None:
    text = ('vllm:num_requests_waiting{engine="0",model_name="a"} 3.0\n'
            'vllm:num_requests_waiting{engine="1",model_name="a"} 4.0\n'
            'vllm:num_requests_running{engine="0",model_name="a"} 2.0\n'
            'vllm:num_requests_running{engine="1",model_name="a"} 1.0\n'
            'vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.4\n'
            'vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.9\n')
    assert parse("vllm", text) == Reading(7, 3, 0.9)


def test_older_vllm_reports_its_cache_as_gpu_cache_usage() -> None:
    text = ('vllm:num_requests_waiting{model_name="a"} 1.0\n'
            'vllm:gpu_cache_usage_perc{model_name="a"} 0.75\n')
    assert parse("vllm", text) == Reading(1, 0, 0.75)


def test_sglang_queue_and_token_usage() -> None:
    text = ('# TYPE sglang:num_queue_reqs gauge\n'
            'sglang:num_queue_reqs{model_name="q",tp_rank="0"} 5.0\n'
            'sglang:num_running_reqs{model_name="q",tp_rank="0"} 16.0\n'
            'sglang:token_usage{model_name="q",tp_rank="0"} 0.83\n')
    assert parse("sglang", text) == Reading(5, 16, 0.83)


def test_llamacpp_deferred_requests_are_its_queue() -> None:
    text = ("# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 2\n"
            "llamacpp:requests_processing 4\n")
    assert parse("llamacpp", text) == Reading(2, 4, None)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llamacpp"])
def test_the_stand_in_engine_speaks_each_format(engine: str) -> None:
    standin = QueueingEngine("e", slots=4, engine=engine)
    standin.waiting, standin.running = 3, 2
    reading = parse(engine, standin.metrics_text())
    assert (reading.waiting, reading.running) == (3, 2)


def test_another_engines_page_is_not_a_reading() -> None:
    with pytest.raises(NotAReading, match="sglang"):
        parse("sglang", (FIXTURES / "metrics-generate-busy.txt").read_text())


def test_malformed_and_non_finite_samples_are_skipped() -> None:
    text = ('vllm:num_requests_waiting{model_name="a"} NaN\n'
            'vllm:num_requests_waiting{model_name="b"} oops\n'
            'vllm:num_requests_waiting{model_name="c",x="a}b"} 2\n'
            'vllm:num_requests_waiting\n')
    assert parse("vllm", text).waiting == 2


def test_a_negative_series_cannot_hide_another_series_queue() -> None:
    page = 'vllm:num_requests_waiting{engine="0"} 9\nvllm:num_requests_waiting{engine="1"} -9\n'
    assert parse("vllm", page).waiting == 9  # a queue is never shorter than empty


def test_huge_series_that_sum_past_every_number_are_not_a_reading() -> None:
    page = "".join(f'vllm:num_requests_waiting{{engine="{n}"}} 1e308\n' for n in range(3))
    with pytest.raises(NotAReading):
        parse("vllm", page)

"""CSV traces: what is accepted, and errors that name the line and what would work."""

from __future__ import annotations

import pytest

from serving.autoscaling.arrivals import Request, TraceError, parse_trace


def test_a_trace_with_a_header_is_read_and_sorted():
    lines = ["time_s,input_tokens,output_tokens", "5,100,10", "1.5, 4000, 1000", ""]
    assert parse_trace(lines, "t.csv") == [Request(1.5, 4000, 1000), Request(5.0, 100, 10)]


def test_a_trace_without_a_header_is_read():
    assert parse_trace(["0,1,1"], "t.csv") == [Request(0.0, 1, 1)]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["time_s,input_tokens,output_tokens", "1,2"],
            "line 2: 2 fields; write time_s,input_tokens,output_tokens",
        ),
        (["1,a,3"], "line 1: 1,a,3 is not a time in seconds and two whole token counts"),
        (["1,2,3", "-4,2,3"], "line 2: time -4: 0 or more seconds"),
        (["1,0,3"], "line 1: token counts must be at least 1"),
        (["time,in,out"], "line 1"),
        ([], "no requests"),
        (["1,100000,100000"], "above max_seq_len 8192"),
    ],
)
def test_a_malformed_trace_names_the_line(lines, expected):
    with pytest.raises(TraceError) as raised:
        parse_trace(lines, "t.csv", max_seq_len=8192)
    assert "--trace t.csv" in str(raised.value)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)

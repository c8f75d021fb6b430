"""bench/serve_bench.py's arithmetic: passes combined into one mode's figures, and the table. (Its figures
are the benchmark's output, never asserted here; its client is exercised by tests/test_serve_command.py.)"""
import pytest

from bench.serve_bench import combine, format_table, multipart


def figures(clients, latencies, wall, audio):
    return {"clients": clients, "requests": len(latencies), "answered_200": len(latencies), "latencies": latencies,
            "wall_seconds": wall, "audio_seconds": audio}


def test_passes_combine_into_totals_and_percentiles_over_every_request():
    combined = combine([figures(1, [1.0] * 50, 50.0, 100.0), figures(1, [3.0] * 50, 150.0, 100.0)])
    assert combined["requests"] == 100 and combined["answered_200"] == 100 and combined["passes"] == 2
    assert combined["utterances_per_second"] == pytest.approx(100 / 200)
    assert combined["real_time_factor"] == pytest.approx(200 / 200)
    assert combined["latency_p50"] == 2.0 and combined["latency_p99"] == 3.0


def test_the_table_states_the_ratio():
    sequential = combine([figures(1, [0.5] * 10, 5.0, 20.0)])
    concurrent = combine([figures(16, [1.0] * 10, 2.0, 20.0)])
    table = format_table(sequential, concurrent)
    assert "16 concurrent" in table and "one at a time" in table and table.endswith("2.50x")


def test_multipart_body_names_every_field():
    body, content_type = multipart([("model", b"ds2", None), ("file", b"RIFF", "a.wav")], boundary="B")
    assert content_type == "multipart/form-data; boundary=B"
    assert body == (b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nds2\r\n'
                    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--B--\r\n')

import pytest

from devtools.demo import run_demo, sample_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_routes_every_sample_and_shows_the_table(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")
    assert run_demo(tiny_model_dir, timeout_s=120) == 0
    out = capsys.readouterr().out
    assert f"{len(sample_records())} of {len(sample_records())} inquiries accounted for" in out
    assert "inquiries.auto_response" in out and "inquiries.human_agent" in out and "inquiries.dlq" in out

import json
import subprocess
import sys

from triage.cli import main


def test_classify_json_prints_one_triage_object_per_text(tiny_model_dir, capsysbinary):
    code = main(
        [
            "classify",
            "--json",
            "--model-dir",
            str(tiny_model_dir),
            "i forgot my password please",
            "i want a refund thanks",
            "refund now, i am furious and angry",
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [line["intent"]["label"] for line in lines] == ["recover_password", "get_refund", "get_refund"]
    assert all(len(line["intent"]["top_k"]) == 3 for line in lines)
    assert [line["route"] for line in lines] == ["auto_response", "auto_response", "human_agent"]
    assert lines[2]["sentiment"]["label"] == "negative" and "negative_sentiment" in lines[2]["reasons"]
    assert set(lines[0]["model"]) == {"intent", "sentiment"}


def test_classify_text_output(tiny_model_dir, capsys):
    assert main(["classify", "--model-dir", str(tiny_model_dir), "track my order thanks"]) == 0
    out = capsys.readouterr().out
    assert "track_order" in out and "route:" in out


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["classify", "--model-dir", str(tmp_path), "hello"]) == 1
    assert "train a model first" in capsys.readouterr().err


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "triage", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "broker", "classify", "demo", "train", "evaluate"):
        assert command in out
    run_help = subprocess.run(
        [sys.executable, "-m", "triage", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--bootstrap-servers" in run_help and "TRIAGE_" in run_help


def test_train_and_evaluate_are_dispatched_to_training(capsys):
    import pytest

    for argv, expected in (
        (["evaluate", "intent", "--help"], "--text-column"),
        (["train", "sentiment", "--help"], "--base-model"),
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0 and expected in capsys.readouterr().out


def test_bad_settings_are_one_line_per_setting_with_its_variable(monkeypatch, capsys):
    monkeypatch.setenv("TRIAGE_BATCH_SIZE", "abc")
    monkeypatch.setenv("TRIAGE_DEVICE", "tpu")
    assert main(["classify", "hello"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "TRIAGE_BATCH_SIZE" in err and "'abc'" in err and "TRIAGE_DEVICE" in err
    assert "--batch-size" in err and "--device" in err
    monkeypatch.delenv("TRIAGE_BATCH_SIZE")
    monkeypatch.delenv("TRIAGE_DEVICE")
    monkeypatch.setenv("TRIAGE_KAFKA_PROPERTIES", "not json")
    assert main(["classify", "hello"]) == 2
    assert "take JSON" in capsys.readouterr().err


def test_classify_refuses_empty_text_and_reads_undecodable_bytes(tiny_model_dir, capsys):
    from triage.cli import _readable

    assert main(["classify", "--model-dir", str(tiny_model_dir), "refund", "  "]) == 2
    assert "TEXT 2 is empty" in capsys.readouterr().err
    undecodable = b"caf\xe9 refund".decode("utf-8", "surrogateescape")  # how Python passes such argv bytes
    assert _readable(undecodable) == "caf\ufffd refund"
    assert main(["classify", "--model-dir", str(tiny_model_dir), undecodable]) == 0


def test_kafka_client_errors_are_one_line(monkeypatch, capsys):
    from confluent_kafka import KafkaError, KafkaException

    import triage.cli as cli

    def unknown_property(_args):
        raise KafkaException(KafkaError(KafkaError._INVALID_ARG, 'No such configuration property: "foo"'))

    monkeypatch.setattr(cli, "_cmd_topics_create", unknown_property)
    assert main(["topics", "create"]) == 1
    assert capsys.readouterr().err.strip() == 'triage: error: Kafka client: No such configuration property: "foo"'


def test_broker_port_is_checked(capsys):
    import socket

    import pytest

    from consumer.errors import BrokerError
    from devtools.broker import EmbeddedBroker

    with pytest.raises(SystemExit):
        main(["broker", "--port", "99999"])
    assert "out of range" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1])
        try:
            with pytest.raises(BrokerError, match="in use"):  # before anything is started
                broker.start()
        finally:
            broker.stop()


def test_topics_without_an_action_shows_the_topics_help(capsys):
    assert main(["topics"]) == 2
    assert "usage: triage topics" in capsys.readouterr().out

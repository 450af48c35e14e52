import json
import subprocess
import sys

from consumer.cli import main


def test_classify_json_prints_one_triage_object_per_text(tiny_model_dir, capsysbinary):
    code = main(["classify", "--json", "--model-dir", str(tiny_model_dir),
                 "i forgot my password please", "i want a refund thanks", "refund now, i am furious and angry"])
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
    out = subprocess.run([sys.executable, "-m", "consumer", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("run", "broker", "classify", "demo", "train", "evaluate"):
        assert command in out
    run_help = subprocess.run([sys.executable, "-m", "consumer", "run", "--help"], capture_output=True, text=True,
                              check=True).stdout
    assert "--bootstrap-servers" in run_help and "TRIAGE_" in run_help


def test_train_and_evaluate_are_dispatched_to_training(capsys):
    import pytest

    for argv, expected in ((["evaluate", "intent", "--help"], "--text-column"), (["train", "sentiment", "--help"],
                                                                                  "--base-model")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0 and expected in capsys.readouterr().out

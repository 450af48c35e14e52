"""Train a tiny BERT through the real training code, then load and evaluate the artifact."""

import csv
import json
import random
from pathlib import Path

import pytest

from tests.paths import DATA_DIR
from training import data as bitext
from training.paths import default_base_model
from triage.cli import main

ROWS_PER_RELEASE = 120


def _subset(src: Path, dst: Path, n: int, seed: int) -> None:
    """The header plus ``n`` seeded random rows of a Bitext CSV (keeps the BOM of the 8k file)."""
    raw = src.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    with open(src, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    body = random.Random(seed).sample(rows[1:], n)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *body])


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)  # the random base's weights; unseeded, they depended on which tests ran before
    directory = tmp_path_factory.mktemp("tiny-base")
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for i, rel in enumerate((bitext.BITEXT_8K, bitext.BITEXT_4K5, bitext.BITEXT_27K_SAMPLE)):
        _subset(DATA_DIR / rel, root / rel, ROWS_PER_RELEASE, seed=i)
    return root


@pytest.fixture(scope="module")
def trained(tiny_base, sentiment_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "intent"
    argv = [
        "train",
        "intent",
        "--base-model",
        str(tiny_base),
        "--data-dir",
        str(sentiment_data),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--train-on",
        "8k",
        "--seed",
        "1",
        "--outlier-exposure",
        "--lr",
        "3e-3",  # a random base: a step large enough to learn in 16 steps,
        "--freeze-layers",
        "-1",
    ]  # and nothing pretrained to keep
    assert main(argv) == 0
    return out


def test_artifact_loads_with_pipeline(trained):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(trained))
    label = classify("where is my order?")[0]["label"]
    manifest = json.loads((trained / "manifest.json").read_text())
    assert label in manifest["labels"]
    assert manifest["task"] == "intent" and manifest["version"].startswith("intent-")
    assert set(manifest["categories"]) == set(manifest["labels"])
    assert manifest["temperature"] > 0
    assert {"ece_before", "ece_after"} <= set(manifest["metrics"]["calibration"])
    assert {d["role"] for d in manifest["data"]} == {
        "train",
        "validation",
        "outliers",
    }  # trained with --outlier-exposure
    assert manifest["hyperparameters"]["freeze_layers"] == -1  # as given on the command line


def test_training_writes_the_int8_export_into_the_one_manifest(trained):
    from model import TextClassifier
    from model.artifacts import read_manifest, sha256_file
    from training.onnx_export import allowed_change

    manifest = read_manifest(trained)
    assert manifest.onnx is not None and manifest.onnx.probe_agreement >= 0.95
    assert manifest.onnx.sha256 == sha256_file(trained / manifest.onnx.file)
    assert manifest.onnx.source_sha256 == sha256_file(trained / "model.safetensors")
    # checked on the other release, against the float32 network's own score there
    check = manifest.onnx.accuracy_checks["validation"]
    assert check["n"] == manifest.metrics["validation"]["n"] and 0 <= check["reference"] <= 1
    assert abs(check["change"]) <= allowed_change(check["n"]) + 0.01
    assert TextClassifier.load(trained).backend == "onnx-int8"


def _csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([("message", "gold"), *rows])
    return path


def test_intent_training_exposes_outliers_and_reports_out_of_scope_confidence(trained):
    manifest = json.loads((trained / "manifest.json").read_text())
    outliers = [d for d in manifest["data"] if d["role"] == "outliers"]
    assert sorted(Path(d["path"]).name for d in outliers) == ["requests.txt", "train.tsv", "train.txt"]
    assert [d["rows"] for d in outliers if d["path"].endswith("requests.txt")] == [40]  # the tiny data's lines
    assert manifest["hyperparameters"]["outlier_exposure"]["rows"] > 0
    assert manifest["hyperparameters"]["request_outliers"] is True
    assert (
        manifest["hyperparameters"]["request_repeats"]
        == manifest["hyperparameters"]["outlier_exposure"]["request_repeats"]
        > 0
    )
    scope = manifest["metrics"]["out_of_scope"]
    assert scope["sources"] == ["goemotions-test", "sst5-test"] and scope["n"] > 0
    assert 0.0 <= scope["confident_share"] <= 1.0 and 0.0 <= scope["validation_confident_share"] <= 1.0


def test_evaluate_json(trained, tmp_path, capsys):
    labels = json.loads((trained / "manifest.json").read_text())["labels"]
    data = _csv(
        tmp_path / "eval.csv",
        [("cancel my order", labels[0]), ("refund please", labels[1]), ("talk to a human", labels[0])],
    )
    code = main(
        [
            "evaluate",
            "intent",
            "--model",
            str(trained),
            "--data",
            str(data),
            "--text-column",
            "message",
            "--label-column",
            "gold",
            "--json",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert {"accuracy", "macro_f1", "per_class", "n", "ece"} <= set(result)
    assert result["n"] == 3
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 0
    assert "accuracy" in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_unknown_labels(trained, tmp_path, capsys):
    data = _csv(tmp_path / "bad.csv", [("hello", "not_an_intent"), ("bye", "also_unknown")])
    code = main(
        [
            "evaluate",
            "intent",
            "--model",
            str(trained),
            "--data",
            str(data),
            "--text-column",
            "message",
            "--label-column",
            "gold",
            "--json",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "not_an_intent" in err and "also_unknown" in err


def test_evaluate_wrong_task(trained, tmp_path, capsys):
    data = _csv(tmp_path / "s.csv", [("hello", "neutral")])
    assert (
        main(
            [
                "evaluate",
                "sentiment",
                "--model",
                str(trained),
                "--data",
                str(data),
                "--text-column",
                "message",
                "--label-column",
                "gold",
            ]
        )
        == 2
    )


def test_report_scores_the_third_release_and_leaves_out_what_the_model_saw(trained, sentiment_data, tmp_path):
    """The report's 27K section: released and filled; *unseen* drops texts of the release the model trained on."""
    from training.report import third_release_section

    data = tmp_path / "data"
    (data / bitext.BITEXT_27K_SAMPLE).parent.mkdir(parents=True)
    (data / "bitext").symlink_to(sentiment_data / "bitext")
    labels = set(json.loads((trained / "manifest.json").read_text())["labels"])
    sample = [r for r in bitext.read_csv_rows(DATA_DIR / bitext.BITEXT_27K_SAMPLE) if r["intent"] in labels][:40]
    seen = [x for x in bitext.load_release(data, "8k") if x.intent in labels][:5]  # intent-8k trained on these
    other = [x for x in bitext.load_release(data, "4k5") if x.intent in labels][:3]  # and not on these
    rows = [[r["flags"], r["instruction"], r["category"], r["intent"]] for r in sample]
    rows += [["B", x.text, x.category, x.intent] for x in seen + other]
    with open(data / bitext.BITEXT_27K_SAMPLE, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["flags", "instruction", "category", "intent"], *rows])
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "intent-8k").symlink_to(trained)

    lines = third_release_section(tmp_path / "artifacts", data, tmp_path / "tmp")
    table = {
        tuple(c.strip() for c in line.split("|")[1:4]): [c.strip() for c in line.split("|")[4:-1]]
        for line in lines
        if line.startswith("| `") or line.startswith("| TF-IDF")
    }
    assert set(table) == {
        ("`intent-8k`", "8k", "released"),
        ("`intent-8k`", "8k", "filled"),
        ("TF-IDF + LR", "8k", "released"),
    }
    n_released = len(bitext.load_bitext_27k(data / bitext.BITEXT_27K_SAMPLE, fill=False))
    n_filled = len(bitext.load_bitext_27k(data / bitext.BITEXT_27K_SAMPLE, seed=0))
    for key, n in (
        (("`intent-8k`", "8k", "released"), n_released),
        (("`intent-8k`", "8k", "filled"), n_filled),
        (("TF-IDF + LR", "8k", "released"), n_released),
    ):
        assert int(table[key][0]) == n
        assert int(table[key][-2]) == n - len(seen)  # the 8k texts are not unseen; the 4k5 ones are
    scored = {
        name: (tmp_path / "tmp" / f"intent-27k-{name}-all-intent-8k.csv").read_text() for name in ("released", "filled")
    }
    assert "{{" in scored["released"] and "{{" not in scored["filled"]


def test_what_a_model_has_seen_follows_its_manifest(trained, sentiment_data, tmp_path):
    """--train-on 8k: its training release only; --train-on both: both releases plus the calibration 10%."""
    from training.report import seen_by

    train_on, trained_rows, built = seen_by(trained, sentiment_data)
    assert train_on == "8k" and {x.source for x in trained_rows} == {"8k"} and built == trained_rows
    manifest = json.loads((trained / "manifest.json").read_text())
    manifest["hyperparameters"]["train_on"] = "both"
    (tmp_path / "both").mkdir()
    (tmp_path / "both" / "manifest.json").write_text(json.dumps(manifest))
    train_on, trained_rows, built = seen_by(tmp_path / "both", sentiment_data)
    assert train_on == "both" and {x.source for x in trained_rows} == {"8k", "4k5", "4k5-slots"}
    held = {x.text for x in built[len(trained_rows) :]}
    assert held and not held & {x.text for x in trained_rows}


#: every file the sentiment mix and its validation sources read -> how many lines to keep (None: all)
SENTIMENT_FILES = {
    "goemotions/train.tsv": 400,
    "goemotions/test.tsv": 100,
    "goemotions/emotions.txt": None,
    "goemotions/sentiment_dict.json": None,
    "sst5/train.txt": 200,
    "sst5/test.txt": 50,
    "customer_reviews/custrev.txt": 200,
    "tweeteval/val_text.txt": 60,
    "tweeteval/val_labels.txt": 60,
    "probe/customer_service_probe.csv": None,
    "written/customer_service_messages.csv": 150,
    "probe/customer_service_holdout.csv": 80,
    "out_of_scope/out_of_scope.csv": None,
    "outliers/requests.txt": 40,
}


@pytest.fixture(scope="module")
def sentiment_data(tiny_data) -> Path:
    """The tiny Bitext subsets plus the first lines of every sentiment source (whole files where small)."""
    for rel, lines in SENTIMENT_FILES.items():
        text = (DATA_DIR / rel).read_text(encoding="utf-8")
        if lines is not None:
            text = "\n".join(text.splitlines()[:lines]) + "\n"
        (tiny_data / rel).parent.mkdir(parents=True, exist_ok=True)
        (tiny_data / rel).write_text(text, encoding="utf-8")
    return tiny_data


def test_sentiment_training_calibrates_on_a_holdout_of_its_mix(tiny_base, sentiment_data, tmp_path, monkeypatch):
    from model import TextClassifier
    from model.artifacts import read_manifest
    from model.text import prepare
    from training import sentiment
    from training import sentiment_data as sd
    from training.data import stratified_holdout

    trained_on: list[str] = []
    real_train = sentiment.train

    def spy(model, tokenizer, texts, *args, **kwargs):
        trained_on.extend(texts)
        return real_train(model, tokenizer, texts, *args, **kwargs)

    monkeypatch.setattr(sentiment, "train", spy)
    out = tmp_path / "sentiment"
    argv = [
        "train",
        "sentiment",
        "--base-model",
        str(tiny_base),
        "--data-dir",
        str(sentiment_data),
        "--output",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    manifest = read_manifest(out)
    assert manifest.labels == ["negative", "neutral", "positive"] and manifest.temperature > 0
    mixed = sd.build_mix(sentiment_data, sd.DEFAULT_MIX, seed=1)
    training = manifest.metrics["training"]
    # the temperature is fitted on the mix's held-out 10%, which the network never trained on
    assert manifest.metrics["calibration"]["fitted_on"] == sd.CALIBRATION_SET
    assert training["calibration_rows"] == manifest.metrics[sd.CALIBRATION_SET]["n"] > 0
    assert sum(training["rows"].values()) + training["calibration_rows"] == len(mixed)
    kept, held = stratified_holdout(mixed, sd.CALIBRATION_SHARE, 1, key=lambda r: (r.source, r.label))
    # ...on the text its steps give, as the service will read it: emoji as their names
    assert manifest.text_steps == ["emoji_words"]
    assert trained_on == prepare([r.text for r in kept], ["emoji_words"])
    assert not set(trained_on) & set(prepare([r.text for r in held], ["emoji_words"]))
    for source in ("cs-holdout", "cs-holdout-emoji", "tweeteval-val-holdout", "bitext-4k5", "goemotions-test", "probe"):
        assert manifest.metrics[source]["n"] > 0
    assert {d.role for d in manifest.data} == {"train", "validation"}
    assert TextClassifier.load(out).predict_proba(["my parcel never arrived"]).shape == (1, 3)
    # the int8 export was checked on every validation source
    assert manifest.onnx is not None
    for source, check in manifest.onnx.accuracy_checks.items():
        assert check["n"] == manifest.metrics[source]["n"]
    assert set(manifest.onnx.accuracy_checks) == {
        "cs-holdout",
        "cs-holdout-emoji",
        "tweeteval-val-holdout",
        "bitext-4k5",
        "goemotions-test",
        "probe",
    }


def test_freezing_every_layer_is_a_usage_error(tiny_base, sentiment_data, tmp_path, capsys):
    out = tmp_path / "intent"
    argv = [
        "train",
        "intent",
        "--base-model",
        str(tiny_base),
        "--data-dir",
        str(sentiment_data),
        "--output",
        str(out),
        "--epochs",
        "1",
        "--train-on",
        "8k",
        "--freeze-layers",
        "1",
    ]  # the tiny base has one layer
    assert main(argv) == 2
    assert "would freeze all 1 encoder layers" in capsys.readouterr().err
    assert not out.exists()
    assert main(["train", "intent", "--freeze-layers", "-2", "--output", str(out)]) == 2


def test_crossval_trains_one_model_per_fold_and_the_shipped_model_takes_its_temperature(
    tiny_base, sentiment_data, tmp_path, monkeypatch, capsys
):
    """`triage crossval intent` writes the folds; `train --train-on all` with the same recipe stores their T."""
    from model.artifacts import read_manifest
    from training import intent

    out = tmp_path / "cv"
    recipe = [
        "--base-model",
        str(tiny_base),
        "--data-dir",
        str(sentiment_data),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--seed",
        "1",
        "--lr",
        "3e-3",
        "--freeze-layers",
        "-1",
    ]
    assert main(["crossval", "intent", *recipe, "--hold-out", "8k", "27k", "4k5+27k", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "crossval.json").read_text())
    assert set(summary["folds"]) == {"8k", "27k", "4k5+27k"}
    assert summary["worst_fold"]["held_out"] in ("8k", "27k")
    for fold in summary["folds"].values():
        assert fold["n"] > 50 and 0 <= fold["accuracy"] <= 1 and fold["temperature"] > 0
        assert set(fold["out_of_scope_confident"]) == {"written", "sentences"}
    assert summary["folds"]["8k"]["train_on"] == ["4k5", "27k"]
    assert "| 27k | 4k5 + 8k |" in printed and (out / "crossval.md").is_file()
    # the shipped recipe trains on all three releases and stores the temperature the folds pooled
    monkeypatch.setattr(intent, "CROSSVAL_REPORT", out / "crossval.json")
    model_dir = tmp_path / "intent"
    assert main(["train", "intent", *recipe, "--output", str(model_dir)]) == 0
    manifest = read_manifest(model_dir)
    assert manifest.temperature == pytest.approx(summary["pooled_temperature"])
    assert "crossval" in manifest.metrics["calibration"]["temperature_source"]
    assert {Path(d.path).name for d in manifest.data if d.role == "train"} == {
        Path(bitext.BITEXT_8K).name,
        Path(bitext.BITEXT_4K5).name,
        Path(bitext.BITEXT_27K_SAMPLE).name,
    }
    # another recipe was not cross-validated: its temperature is its own, and training says so
    other = tmp_path / "intent-other"
    assert main(["train", "intent", *recipe, "--label-smoothing", "0.05", "--output", str(other)]) == 0
    assert "no cross-validation of this recipe" in capsys.readouterr().out
    assert "crossval" not in read_manifest(other).metrics["calibration"]["temperature_source"]

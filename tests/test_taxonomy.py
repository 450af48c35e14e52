"""A team's own labelled data: what `triage train intent --data` refuses, and how it holds out validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.policy import PolicyRules
from training.data import Inquiry, template_key
from training.errors import TaxonomyError
from training.taxonomy import Columns, check, load_policy, read_labelled, unique, validation_split
from triage.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "telecom"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _items(counts: dict[str, int], category: str = "c") -> list[Inquiry]:
    return [Inquiry(f"{label} example number {chr(97 + i)} x{i}", label, category) for label, n in counts.items()
            for i in range(n)]  # fmt: skip


def test_the_example_taxonomy_fits_its_policy_and_not_the_built_in_one():
    items = unique(read_labelled(EXAMPLE / "inquiries.csv", Columns(category="category")))
    assert len(items) == 240
    categories = check(items, load_policy(EXAMPLE / "policy.toml"))
    assert categories["no_signal"] == "technical" and len(categories) == 8
    with pytest.raises(TaxonomyError) as caught:
        check(items, load_policy(None))
    message = str(caught.value)
    assert "names none of the data's intents: it was written for another taxonomy" in message
    assert "names intents the data does not have: cancel_order, change_order" in message and "and 17 more" in message


def test_an_unknown_column_names_the_columns_there_are(tmp_path):
    path = _write(tmp_path / "d.csv", "utterance,label\nhello,greet\n")
    with pytest.raises(TaxonomyError, match="no column 'text', 'intent'; the file has 'utterance', 'label'"):
        read_labelled(path, Columns())
    assert read_labelled(path, Columns("utterance", "label"))[0] == Inquiry("hello", "greet", "greet", source="d.csv:2")


def test_empty_texts_and_labels_are_refused_with_their_rows(tmp_path):
    path = _write(tmp_path / "d.csv", "text,intent\nhello,greet\n,greet\nbye,\n  ,  \n")
    with pytest.raises(TaxonomyError) as caught:
        read_labelled(path, Columns())
    assert "empty text in 2 row(s): 3, 5" in str(caught.value) and "empty label in 2 row(s): 4, 5" in str(caught.value)


def test_json_lines_are_read_and_a_broken_line_is_named(tmp_path):
    good = _write(tmp_path / "d.jsonl", '{"text": "hi", "intent": "greet", "n": 1}\n\n{"text": "bye", "intent": 7}\n')
    assert [(x.text, x.intent) for x in read_labelled(good, Columns())] == [("hi", "greet"), ("bye", "7")]
    bad = _write(tmp_path / "e.jsonl", '{"text": "hi", "intent": "greet"}\n{"text": "bye"\n')
    with pytest.raises(TaxonomyError, match="line 2 is not JSON"):
        read_labelled(bad, Columns())
    listed = _write(tmp_path / "f.jsonl", '["hi", "greet"]\n')
    with pytest.raises(TaxonomyError, match="line 1 is not a JSON object"):
        read_labelled(listed, Columns())


def test_a_file_that_is_not_utf8_or_absent_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,intent\ncaf\xe9 please,order\n".encode("latin-1"))
    with pytest.raises(TaxonomyError, match="not UTF-8"):
        read_labelled(path, Columns())
    with pytest.raises(TaxonomyError, match="no such file"):
        read_labelled(tmp_path / "absent.csv", Columns())


def test_a_text_under_two_labels_is_refused_and_plain_repeats_are_dropped():
    same = [Inquiry("Where is my bill", "billing", "b"), Inquiry("where is  my bill", "billing", "b")]
    assert len(unique(same)) == 1
    with pytest.raises(TaxonomyError, match="two different labels: 'where is my bill': billing, sales"):
        unique([*same, Inquiry("WHERE IS MY BILL", "sales", "s")])


def test_what_cannot_make_a_model_is_refused_all_at_once():
    with pytest.raises(TaxonomyError, match="one label only"):
        check(_items({"a": 20}), None)
    with pytest.raises(TaxonomyError, match=r"fewer than 10 examples \(--min-examples\) for: b \(3\)"):
        check(_items({"a": 20, "b": 3}), None)
    assert check(_items({"a": 20, "b": 3}), None, min_examples=3) == {"a": "c", "b": "c"}
    mixed = _items({"a": 12, "b": 12}) + [Inquiry("a in another category", "a", "other")]
    with pytest.raises(TaxonomyError, match=r"intents under two or more categories: a \(c, other\)"):
        check(mixed, None)


def test_labels_the_policy_lacks_are_refused_and_so_are_names_the_data_lacks():
    items = _items({"a": 12, "b": 12, "new": 12})
    complete = PolicyRules(human_intents=frozenset({"a"}), auto_intents=frozenset({"b"}))
    with pytest.raises(TaxonomyError, match=r"does not name \(add each to human_intents or auto_intents\): new"):
        check(items, complete)
    typo = PolicyRules(human_intents=frozenset({"a", "bb"}))
    with pytest.raises(TaxonomyError, match="names intents the data does not have: bb"):
        check(items, typo)


def test_validation_keeps_near_duplicates_on_one_side():
    items = []
    for label in ("pay", "cancel"):
        for i in range(20):
            base = f"{label} request {'abcdefghijklmnopqrst'[i]} please"
            items += [Inquiry(base, label, "c"), Inquiry(f"{base.upper()} #{1000 + i}!", label, "c")]  # twins
    train, held = validation_split(items, share=0.15, seed=3)
    assert len(train) + len(held) == len(items)
    assert not {template_key(x.text) for x in train} & {template_key(x.text) for x in held}
    for label in ("pay", "cancel"):
        share = sum(x.intent == label for x in held) / 40
        assert 0.1 <= share <= 0.2
        assert any(x.intent == label for x in train)


def test_an_intent_written_one_way_only_is_refused():
    items = [Inquiry(f"cancel order {i}", "cancel", "c") for i in range(12)] + _items({"b": 12})
    with pytest.raises(TaxonomyError, match="every example of cancel is the same text"):
        validation_split(items)


def test_train_refuses_bad_data_before_loading_a_model(tmp_path, capsys):
    path = _write(tmp_path / "d.csv", "text,intent\nhello,greet\n")
    assert main(["train", "intent", "--data", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("triage train: error: cannot train on this data") and "one label only" in err
    assert not (tmp_path / "out").exists()

"""Suggested replies: retrieval within the predicted intent, slot filling, the library file and the event."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import orjson
import pytest

from consumer.processor import Processor, Topics
from consumer.routing import RoutingPolicy
from model import TriageModel
from model.artifacts import read_manifest, write_manifest
from model.errors import ArtifactError
from model.replies import ReplyLibrary, ReplyTemplate
from schemas import EnrichedEvent
from tests.fakes import FakeMessage
from training.replies import Row, build_library, canonical_slot, measure, same_value, template_of, write_library


def _library() -> ReplyLibrary:
    return ReplyLibrary(
        [
            ReplyTemplate("track_order", "where is my order {{Order Number}}", "Order {{Order Number}} is on its way."),
            ReplyTemplate("track_order", "when will my parcel arrive", "Parcels arrive in 3-5 days: {{Track Page}}."),
            ReplyTemplate("cancel_order", "where is my order to cancel it", "Cancel {{Order Number}} on {{Orders}}."),
            ReplyTemplate("get_refund", "refund of {{Refund Amount}} to {{Email}}", "We refund {{Refund Amount}}."),
        ],
        "replies-test",
        {"Account Type": ["gold", "platinum plus"]},
    )


def test_the_reply_is_one_of_the_predicted_intent_and_the_closest_of_them():
    library = _library()
    reply = library.suggest("where is my order ORD-884512?", "track_order")
    assert reply is not None and reply.text == "Order ORD-884512 is on its way." and reply.library == "replies-test"
    # the same words, but the model said cancel_order: the reply is cancel_order's, never another intent's
    other = library.suggest("where is my order ORD-884512?", "track_order".replace("track", "cancel"))
    assert other is not None and other.text.startswith("Cancel ORD-884512")
    closer = library.suggest("when does the parcel arrive", "track_order")
    assert closer is not None and closer.text.startswith("Parcels arrive")
    assert closer.confidence > library.suggest("hello", "track_order").confidence  # type: ignore[union-attr]
    assert library.suggest("where is my order", "review") is None  # no template for that intent


def test_slots_the_inquiry_fills_are_filled_and_the_others_stay_marked():
    library = _library()
    template = "Order {{Order Number}}: we wrote to {{Email}} about {{Refund Amount}}."
    text, slots = library.fill(template, "order 5521873")
    assert text == "Order 5521873: we wrote to {{Email}} about {{Refund Amount}}."
    assert [(s.name, s.value) for s in slots] == [("Order Number", "5521873"), ("Email", None), ("Refund Amount", None)]
    filled, _ = library.fill(
        "{{Refund Amount}} to {{Email}} for {{Invoice Number}}",
        "refund $12.50 to me@example.com for invoice #INV-20931",
    )
    assert filled == "$12.50 to me@example.com for INV-20931"
    assert library.fill("{{Order Number}}", "I paid $1,250.00 on 12.03")[1][0].value is None  # amounts and dates
    assert library.fill("{{Order Number}}", "write to anna2024@example.com")[1][0].value is None  # are no orders
    assert library.fill("{{Account Type}} it is", "move me to Platinum Plus please")[0] == "platinum plus it is"


def test_bitext_slot_names_and_values_become_the_ones_the_service_fills():
    assert canonical_slot("Purchase ID Anonymized") == canonical_slot("Order Number Anonymized") == "Order Number"
    assert canonical_slot("Bill Number Anonymized") == "Invoice Number"
    assert canonical_slot("Order Details") == "Order Details" and canonical_slot("Website Name") == "Website Name"
    row = Row(
        "cancel order 732201349959 now",
        "cancel_order",
        "To cancel 732201349959 ({{Purchase ID Anonymized}}) go to {{Order Details}}.",
        "order_id",
        "732201349959",
    )
    template = template_of(row)
    assert template.example == "cancel order {{Order Number}} now"
    assert template.text == "To cancel {{Order Number}} ({{Order Number}}) go to {{Order Details}}."


def test_library_round_trip_and_a_changed_file_is_refused(tmp_path, tiny_model_dir):
    rows = [Row(f"where is order {n}", "track_order", "It ships soon.", "order_id", str(n)) for n in (11111, 22222)]
    rows.append(Row("cancel my order please", "cancel_order", "Cancelled: {{Order Number Anonymized}}."))
    library = build_library(rows)
    assert len(library.templates) == 2  # the same reply once
    models = shutil.copytree(tiny_model_dir, tmp_path / "models")
    reference = write_library(models / "intent", library, "test rows")
    manifest = read_manifest(models / "intent")
    write_manifest(models / "intent", manifest.model_copy(update={"replies": reference}))
    loaded = TriageModel.load(models)
    assert loaded.replies is not None and loaded.replies.version == library.version
    assert loaded.replies.suggest("cancel 99999 pls", "cancel_order").text == "Cancelled: 99999."  # type: ignore[union-attr]
    (models / "intent" / "replies.json").write_bytes(library.to_json().replace(b"soon", b"late"))
    with pytest.raises(ArtifactError, match="hash"):
        TriageModel.load(models)


def test_auto_response_events_carry_a_reply_and_human_ones_do_not(tiny_model_dir):
    model = TriageModel.load(tiny_model_dir)
    model.replies = ReplyLibrary(
        [
            ReplyTemplate("get_refund", "refund for order {{Order Number}}", "Refund for {{Order Number}} started."),
            ReplyTemplate("contact_human_agent", "agent please", "An agent will call you."),
        ],
        "replies-test",
    )
    topics = Topics("auto", "human", "dlq")
    processor = Processor(model, RoutingPolicy.default(), topics, clock=lambda: datetime.now(UTC))
    messages = [
        FakeMessage(orjson.dumps({"event_id": "a", "text": "i want a refund please for order 7731845"}), _offset=1),
        FakeMessage(orjson.dumps({"event_id": "h", "text": "can you help me talk to an agent"}), _offset=2),
    ]
    records = {r.route: EnrichedEvent.model_validate(orjson.loads(r.value)) for r in processor.process(messages)}
    auto, human = records["auto_response"], records["human_agent"]
    assert auto.triage.reply is not None and auto.triage.reply.text == "Refund for 7731845 started."
    assert [(s.name, s.value) for s in auto.triage.reply.slots] == [("Order Number", "7731845")]
    assert human.triage.reply is None


def test_measure_counts_the_right_intent_and_correct_slot_values():
    library = _library()
    held = [
        Row("where is my order 1234567", "track_order", "", "order_id", "1234567"),
        Row("where is my order 00998877", "track_order", "", "order_id", "998877"),
        Row("cancel that order", "cancel_order", ""),
    ]
    result = measure(library, held, ["track_order", "track_order", "track_order"])
    assert result["right_intent"] == round(2 / 3, 4)
    assert result["slots"]["Order Number"] == {"n": 2, "filled": 2, "correct": 2, "correct_share": 1.0}
    assert same_value("370795561790", "3707955617") and not same_value("12", "123") and same_value("#0042", "42")

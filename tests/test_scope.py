"""Text no intent can answer goes to a person with reason out_of_scope."""

from __future__ import annotations

import pytest

from consumer.routing import RoutingPolicy
from model import Prediction
from model.scope import NO_WORDS, UNSUPPORTED_SCRIPT, out_of_scope_reason
from schemas import IntentResult, LabelScore, SentimentResult


@pytest.mark.parametrize("text", ["?", "...", "👍👍", "1234567890", "#$%^&*", " k ", "\u200b\u200b"])
def test_no_words(text):
    assert out_of_scope_reason(text) == NO_WORDS


@pytest.mark.parametrize(
    "text",
    [
        "我想取消我的订单",
        "Я хочу отменить заказ",
        "أريد إلغاء طلبي",
        "注文をキャンセルしたいです",
        "मुझे अपना ऑर्डर रद्द करना है",
        "Θέλω να ακυρώσω",
    ],
)
def test_other_scripts(text):
    assert out_of_scope_reason(text) == UNSUPPORTED_SCRIPT


@pytest.mark.parametrize(
    "text",
    [
        "hi",
        "where is my order #123?",
        "cancel ORD-99",
        "ich möchte stornieren",
        "refund for order 12345 (the café one)",
        "my order 订单 is late",
    ],
)
def test_the_model_decides_the_rest(text):
    assert out_of_scope_reason(text) is None


def test_the_character_rules_never_mark_a_bitext_inquiry():
    from tests.paths import DATA_DIR
    from training import data as bitext

    rows = bitext.load_release(DATA_DIR, "4k5") + bitext.load_release(DATA_DIR, "8k")
    assert [x.text for x in rows if out_of_scope_reason(x.text)] == []


def test_policy_routes_out_of_scope_to_a_person_even_when_confident():
    scores = {"negative": 0.1, "neutral": 0.8, "positive": 0.1}
    prediction = Prediction(
        intent=IntentResult(
            label="track_order",
            category="ORDER",
            confidence=0.99,
            top_k=[LabelScore(label="track_order", score=0.99)],
            out_of_scope=UNSUPPORTED_SCRIPT,
        ),
        sentiment=SentimentResult(label="neutral", score=0.8, scores=scores),
    )
    assert RoutingPolicy.default().decide(prediction) == ("human_agent", ["out_of_scope"])


def test_the_model_marks_out_of_scope_texts(tiny_model):
    predictions = tiny_model.predict(["where is my order", "???", "где моя посылка"])
    assert [p.intent.out_of_scope for p in predictions] == [None, NO_WORDS, UNSUPPORTED_SCRIPT]


@pytest.fixture(scope="module")
def minilm_gate():
    from transformers import AutoTokenizer

    from model.scope import ScopeGate
    from training.paths import default_base_model

    return ScopeGate.for_tokenizer(AutoTokenizer.from_pretrained(default_base_model()))


def test_a_small_vocabulary_keeps_only_the_character_rules(tiny_model):
    assert not tiny_model.scope.vocabulary  # the tiny test tokenizer knows a few hundred words
    assert tiny_model.scope.reason("hfjdksla fjdksl") is None


def test_words_the_tokenizer_does_not_know_are_out_of_scope(minilm_gate):
    from model.scope import UNRECOGNISED_WORDS, ScopeGate

    assert minilm_gate.vocabulary
    gate = ScopeGate(minilm_gate.vocabulary, minilm_gate._tokenize)  # the vocabulary rule alone
    for text in ("hfjdksla fjdksl", "siparişimi iptal etmek istiyorum", "ich möchte meine Bestellung stornieren"):
        assert gate.reason(text) == UNRECOGNISED_WORDS, text
    for text in ("cancelling my freemium account", "where's my parcel", "refund", "I cant login to my acount"):
        assert gate.reason(text) is None, text
    assert minilm_gate.reason("hfjdksla fjdksl") == UNRECOGNISED_WORDS


def test_other_languages_in_latin_letters_are_out_of_scope(minilm_gate):
    from model.scope import OTHER_LANGUAGE

    for text in (
        "quiero cancelar mi pedido",  # the English vocabulary knows most of these words
        "necesito hablar con un agente",
        "je voudrais annuler ma commande",
        "vorrei un rimborso per favore",
        "ik wil mijn account verwijderen",
        "où est mon colis ?",
    ):
        assert minilm_gate.reason(text) == OTHER_LANGUAGE, text
    assert minilm_gate.reason("quero mudar o meu endereço de entrega") is not None  # unrecognised_words
    for text in ("do ya sjip to Canada", "cancel premium acount", "i want my goddamn reimburfsement", "refund"):
        assert minilm_gate.reason(text) is None, text


def test_the_language_rule_marks_no_inquiry_even_with_noise(minilm_gate):
    import random

    from model.scope import OTHER_LANGUAGE
    from tests.paths import DATA_DIR
    from training import data as bitext
    from training.augment import Augmentation, augment

    texts = sorted({x.text for name in ("4k5", "8k") for x in bitext.load_release(DATA_DIR, name)})
    rng, config = random.Random(0), Augmentation()
    noisy = [augment(t, rng, config) for t in texts]
    marked = [t for t in texts + noisy if minilm_gate.reason(t) == OTHER_LANGUAGE]
    assert marked == []


def test_the_vocabulary_rule_marks_almost_no_bitext_inquiry(minilm_gate):
    from tests.paths import DATA_DIR
    from training import data as bitext

    rows = bitext.load_release(DATA_DIR, "4k5") + bitext.load_release(DATA_DIR, "8k")
    marked = [x.text for x in rows if minilm_gate.reason(x.text)]
    assert len(marked) <= 10, marked

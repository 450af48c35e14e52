import pytest

from consumer.errors import ConfigError
from consumer.routing import RoutingPolicy
from model import Prediction
from schemas import IntentResult, LabelScore, SentimentResult


def prediction(intent="get_refund", category="REFUND", confidence=0.9, sentiment="neutral", score=0.8):
    scores = {"negative": 0.1, "neutral": 0.1, "positive": 0.1}
    scores[sentiment] = score
    return Prediction(
        intent=IntentResult(
            label=intent, category=category, confidence=confidence, top_k=[LabelScore(label=intent, score=confidence)]
        ),
        sentiment=SentimentResult(label=sentiment, score=score, scores=scores),
    )


def test_default_policy_routes_as_documented():
    policy = RoutingPolicy.default()
    assert "contact_human_agent" in policy.human_intents and "complaint" in policy.human_intents
    assert policy.decide(prediction()) == ("auto_response", ["automatable_intent"])
    assert policy.decide(prediction("complaint", "FEEDBACK")) == ("human_agent", ["intent_needs_human"])
    assert policy.decide(prediction(sentiment="negative", score=0.95)) == ("human_agent", ["negative_sentiment"])
    assert policy.decide(prediction(sentiment="negative", score=0.55))[0] == "auto_response"
    assert policy.decide(prediction(confidence=0.3)) == ("human_agent", ["low_intent_confidence"])
    route, reasons = policy.decide(prediction("contact_human_agent", "CONTACT", 0.2, "negative", 0.9))
    assert route == "human_agent"
    assert reasons == ["intent_needs_human", "negative_sentiment", "low_intent_confidence"]


def test_policy_from_toml_file(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[routing]\nhuman_intents = []\nhuman_categories = ["REFUND"]\n'
        "negative_threshold = 0.9\nabstain_threshold = 0.1\n"
    )
    policy = RoutingPolicy.from_file(path)
    assert policy.decide(prediction()) == ("human_agent", ["category_needs_human"])
    assert policy.decide(prediction("track_order", "ORDER", 0.2))[0] == "auto_response"


@pytest.mark.parametrize("text", ["[routing]\nabstain_threshold = 2\n", "[routing]\nunknown_key = 1\n", "not toml ["])
def test_invalid_policy_is_a_clear_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid routing policy"):
        RoutingPolicy.from_file(path)


def test_missing_policy_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        RoutingPolicy.from_file(tmp_path / "absent.toml")

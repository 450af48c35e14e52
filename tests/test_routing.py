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


def test_the_built_in_policy_names_every_bitext_intent_once():
    from tests.tiny import BITEXT_CATEGORIES

    policy = RoutingPolicy.default()
    assert policy.fit_problems(BITEXT_CATEGORIES, BITEXT_CATEGORIES.values()) == []
    assert policy.human_intents | policy.auto_intents == set(BITEXT_CATEGORIES)


def test_a_policy_that_does_not_fit_the_labels_says_what_is_wrong():
    policy = RoutingPolicy(
        human_intents=frozenset({"cancel_service"}),
        auto_intents=frozenset({"no_signal", "bill_explanation"}),
        human_categories=frozenset({"BILLING"}),
    )
    intents = {"cancel_service": "account", "no_signal": "technical", "bill_explanation": "billing"}
    assert policy.fit_problems(intents, intents.values()) == [
        "the policy names categories the model does not have: BILLING"
    ]
    problems = policy.fit_problems(["cancel_service", "no_signal", "slow_internet"], ["account", "technical"])
    assert "names intents the model does not have: bill_explanation" in problems[0]
    assert "does not name (add each to human_intents or auto_intents): slow_internet" in problems[-1]
    # without auto_intents, an intent the policy does not name is automatable (the policy is open)
    open_policy = RoutingPolicy(human_intents=frozenset({"cancel_service"}))
    assert open_policy.fit_problems(["cancel_service", "slow_internet"], []) == []


def test_an_intent_in_both_lists_is_refused(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[routing]\nhuman_intents = ["a", "b"]\nauto_intents = ["b", "c"]\n')
    with pytest.raises(ConfigError, match="both human_intents and auto_intents: b"):
        RoutingPolicy.from_file(path)


def test_the_service_refuses_to_start_with_a_policy_for_another_taxonomy(tiny_model, tmp_path):
    from consumer.app import build_processor
    from consumer.settings import Settings

    path = tmp_path / "telecom.toml"
    path.write_text('[routing]\nhuman_intents = ["cancel_service"]\n')
    with pytest.raises(ConfigError, match="names intents the model does not have: cancel_service"):
        build_processor(Settings(policy_file=path), tiny_model)
    assert build_processor(Settings(), tiny_model).policy == RoutingPolicy.default()

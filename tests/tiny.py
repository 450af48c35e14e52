"""Tiny models built inside the tests: real artifacts in the product's format, trained in seconds.

The intent model learns a keyword per intent and the sentiment model a few mood words, so tests can
assert what a person would expect and still exercise the real loading and inference code.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from model.artifacts import SENTIMENT_LABELS, Manifest, read_manifest, write_manifest

INTENTS: dict[str, tuple[str, str]] = {
    # intent: (category, keyword)
    "get_refund": ("REFUND", "refund"),
    "recover_password": ("ACCOUNT", "password"),
    "contact_human_agent": ("CONTACT", "agent"),
    "track_order": ("ORDER", "track"),
    "complaint": ("FEEDBACK", "complaint"),
}
#: the label set of the Bitext model, so that the built-in routing policy (which names every one) fits the tiny
#: model; only INTENTS have training texts
BITEXT_CATEGORIES: dict[str, str] = {
    "cancel_order": "ORDER",
    "change_order": "ORDER",
    "change_shipping_address": "SHIPPING_ADDRESS",
    "check_cancellation_fee": "CANCELLATION_FEE",
    "check_invoice": "INVOICE",
    "check_payment_methods": "PAYMENT",
    "check_refund_policy": "REFUND",
    "complaint": "FEEDBACK",
    "contact_customer_service": "CONTACT",
    "contact_human_agent": "CONTACT",
    "create_account": "ACCOUNT",
    "delete_account": "ACCOUNT",
    "delivery_options": "DELIVERY",
    "delivery_period": "DELIVERY",
    "edit_account": "ACCOUNT",
    "get_invoice": "INVOICE",
    "get_refund": "REFUND",
    "newsletter_subscription": "SUBSCRIPTION",
    "payment_issue": "PAYMENT",
    "place_order": "ORDER",
    "recover_password": "ACCOUNT",
    "registration_problems": "ACCOUNT",
    "review": "FEEDBACK",
    "set_up_shipping_address": "SHIPPING_ADDRESS",
    "switch_account": "ACCOUNT",
    "track_order": "ORDER",
    "track_refund": "REFUND",
}
MOODS: dict[str, list[str]] = {
    "negative": ["angry", "terrible", "furious", "awful"],
    "neutral": ["please", "how", "could", "when"],
    "positive": ["thanks", "great", "love", "wonderful"],
}
FILLER = ["i", "want", "my", "the", "a", "to", "order", "for", "is", "it", "with", "me", "can", "you", "help", "do"]


def vocabulary() -> list[str]:
    words = set(FILLER)
    words.update(keyword for _, keyword in INTENTS.values())
    for mood_words in MOODS.values():
        words.update(mood_words)
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words)]


def make_tokenizer() -> BertTokenizerFast:
    vocab = {token: index for index, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return BertTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=32,
    )


def make_text(rng: random.Random, keyword: str, mood: str) -> str:
    words = rng.sample(FILLER, 4) + [keyword, rng.choice(MOODS[mood])]
    rng.shuffle(words)
    return " ".join(words)


def _train(network, tokenizer, texts: list[str], labels: list[int], steps: int = 80) -> None:
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    target = torch.tensor(labels)
    network.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = network(**encoded, labels=target).loss
        loss.backward()
        optimizer.step()
    network.eval()


def _with_every_bitext_label(
    network: BertForSequenceClassification, trained: list[str]
) -> tuple[BertForSequenceClassification, list[str]]:
    """The trained head widened to every Bitext intent: untrained labels get a logit far below the others (a tiny
    network trained on 27 classes with 5 of them used does not learn; the widened one answers as trained)."""
    labels = sorted(BITEXT_CATEGORIES)
    config = network.config
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    old = network.classifier
    head = torch.nn.Linear(old.in_features, len(labels))
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-20.0)
        for i, label in enumerate(trained):
            head.weight[labels.index(label)] = old.weight[i]
            head.bias[labels.index(label)] = old.bias[i]
    network.classifier = head
    network.num_labels = len(labels)
    return network, labels


def build_artifact(directory: Path, task: str, seed: int = 0, onnx: bool = True) -> Path:
    """A tiny trained artifact; with ``onnx`` also its int8 ONNX export, as `triage train` writes it."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    labels = list(INTENTS) if task == "intent" else list(SENTIMENT_LABELS)
    config = BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    network = BertForSequenceClassification(config)
    texts, targets = [], []
    for _ in range(40):
        for intent, (_, keyword) in INTENTS.items():
            mood = rng.choice(list(MOODS))
            texts.append(make_text(rng, keyword, mood))
            targets.append(labels.index(intent if task == "intent" else mood))
    _train(network, tokenizer, texts, targets)
    if task == "intent":
        network, labels = _with_every_bitext_label(network, labels)
    network.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    write_manifest(
        directory,
        Manifest(
            task=task,
            version=f"{task}-tiny-test-{seed}",
            base_model="tiny-bert (built in tests)",
            labels=labels,
            categories=dict(BITEXT_CATEGORIES) if task == "intent" else {},
            max_length=32,
            hyperparameters={"steps": 80, "seed": seed},
        ),
    )
    if onnx:
        from training.onnx_export import export_onnx

        export_onnx(directory, texts[:64])
    return directory


def build_artifacts(root: Path) -> Path:
    build_artifact(root / "intent", "intent")
    build_artifact(root / "sentiment", "sentiment")
    return root


def write_labelled_csv(path: Path, per_intent: int = 12, seed: int = 5) -> Path:
    """Keyword texts of the tiny intents with their labels (columns text, label): an evaluation set."""
    import csv

    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(per_intent):
            for intent, (_, keyword) in INTENTS.items():
                writer.writerow([make_text(rng, keyword, rng.choice(list(MOODS))), intent])
    return path


def worse_intent_copy(source: Path, target: Path) -> Path:
    """The tiny intent model with its classifier rows for get_refund and track_order swapped: a model that got
    worse (it calls every refund a tracking request and the other way round), version ``intent-worse``."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    manifest = read_manifest(target)
    a, b = manifest.labels.index("get_refund"), manifest.labels.index("track_order")
    for name in ("classifier.weight", "classifier.bias"):
        weights[name][[a, b]] = weights[name][[b, a]]
    save_file(weights, str(target / "model.safetensors"))
    (target / "model.onnx").unlink(missing_ok=True)  # the export was made from the old weights
    write_manifest(target, manifest.model_copy(update={"version": "intent-worse", "onnx": None}))
    return target

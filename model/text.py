"""What a model's text goes through before its tokenizer: steps an artifact names in its manifest.

A model is trained on the text its steps give and must be served the same, so the steps belong to the
artifact (``Manifest.text_steps``), not to the service: ``training`` applies them to every text it trains,
calibrates and validates on, and :class:`~model.classifier.TextClassifier` to every text it is given.

``emoji_words``: an emoji becomes its name ("where is my order 😡" -> "where is my order enraged face").
The English tokenizers here have no emoji: each becomes an unknown token that the sentiment model learned to
read as nothing in particular, so an angry emoji made a complaint *less* negative (0.76 -> 0.19 for that
inquiry). Its name is words the pretrained encoder knows (emoji's CLDR short names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Final, Literal

EMOJI_WORDS: Final = "emoji_words"
TextStep = Literal["emoji_words"]

#: every emoji lies at or above U+00A9 (©); plain English text never reaches the emoji library
_MAYBE_EMOJI = re.compile(r"[^\x00-\xa8]")


def _name(chars: str, data: dict[str, str]) -> str:
    return " " + data["en"].strip(":").replace("_", " ") + " "


@cache
def _replace_emoji() -> Callable[..., str]:
    import emoji

    replace: Callable[..., str] = emoji.replace_emoji
    return replace


def emoji_words(text: str) -> str:
    """``text`` with each emoji replaced by its name between spaces (about 1 µs for text without any)."""
    if not _MAYBE_EMOJI.search(text):
        return text
    return _replace_emoji()(text, replace=_name)


_STEPS = {EMOJI_WORDS: emoji_words}


def prepare(texts: Sequence[str], steps: Sequence[TextStep]) -> list[str]:
    """``texts`` after ``steps``, in order (the same list's contents when there are none)."""
    out = list(texts)
    for step in steps:
        out = [_STEPS[step](text) for text in out]
    return out

"""Text that no intent can answer, told apart before the model's confidence is read.

The intent model is trained on English inquiries. Four kinds of input can make it confident for no reason:
- text with no words at all ("???", "👍", "1234", zero-width characters): ``no_words``;
- text in a script it has never read (Chinese, Cyrillic, Arabic, ...), which the tokenizer turns into unknown
  or single-character pieces: ``unsupported_script``;
- text most of whose words are not English words that the model's tokenizer knows, whole or as a stem plus
  one ending ("hfjdksla fjdksl", "siparişimi iptal etmek istiyorum"): ``unrecognised_words``;
- text in another language whose words an English tokenizer half knows ("quiero cancelar mi pedido",
  "je voudrais annuler ma commande"), so that the model reads "cancelar" as cancel: ``other_language``.
They are recognised from the characters, a language identifier (py3langid's byte n-gram model) and the
tokenizer's vocabulary, and go to a person whatever the model says. Everything else is left to the model's
calibrated confidence (the policy's abstain threshold).

On the vendored Bitext inquiries (about 15,000) the rules mark 5 texts, all terse with a typo in the key word
("updating Premium acount"); on the same inquiries with added typos and noise, 0.3%. The language rule marks
none of them, nor any of three noisy copies of each (44,000 texts), nor any customer-service holdout message,
and 5 of TweetEval's 12,284 test tweets (four in other languages, one a line of hashtags);
the lowest probability of English it gave an inquiry was 0.044 ("do ya sjip to Canada"), against at most 0.003
for the written set's Latin-script requests in Spanish, French, German, Italian, Portuguese, Dutch and others.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NO_WORDS = "no_words"
UNSUPPORTED_SCRIPT = "unsupported_script"
OTHER_LANGUAGE = "other_language"
UNRECOGNISED_WORDS = "unrecognised_words"
#: fewer letters than this is no request (a lone "k", "?", an emoji)
MIN_LETTERS = 2
#: the vocabulary rule needs this many words; a lone word ("refund") is left to the model
MIN_WORDS = 2
#: a text needs at least this share of recognised words
MIN_KNOWN_SHARE = 0.5
#: what the language identifier chooses among: English and languages written in Latin letters (other scripts
#: are ``unsupported_script`` already); a short English text spreads its probability over fewer look-alikes
LATIN_LANGUAGES = (
    "en af ca cs da de es et eu fi fr gl hr hu id it lt lv ms nl no pl pt ro sk sl sv sw tl tr vi"
).split()
#: below this probability of English, a text of MIN_WORDS words or more is in another language
MAX_ENGLISH_PROBABILITY = 0.01
_WORD = re.compile(r"[^\W\d_]+")


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(LATIN_LANGUAGES)
    return identifier


def english_probability(text: str) -> float:
    """py3langid's probability that ``text`` is English rather than another Latin-script language
    (about 50 µs for an inquiry; the model loads once per process, in about a second)."""
    return float(dict(_identifier().rank(text)).get("en", 0.0))


def _latin(char: str) -> bool:
    return "LATIN" in unicodedata.name(char, "")


class ScopeGate:
    """The rules above; ``tokenize`` (a word -> its word pieces) and ``vocabulary`` come from the intent model's
    tokenizer, ``english`` (a text -> its probability of being English) from the language identifier. Without
    them only the first two rules apply."""

    def __init__(
        self,
        vocabulary: frozenset[str] = frozenset(),
        tokenize: Callable[[str], list[str]] | None = None,
        english: Callable[[str], float] | None = None,
    ):
        self.vocabulary = vocabulary
        self._tokenize = tokenize
        self._english = english
        self._known = lru_cache(maxsize=65536)(self._known_uncached)

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase) -> ScopeGate:
        """A gate reading an uncased WordPiece-style (English) vocabulary, with the language rule; other
        tokenizers get the first two rules."""
        try:
            vocab = tokenizer.get_vocab()
        except Exception:
            return cls()
        words = frozenset(w for w in vocab if w.isalpha() and w.islower())
        if len(words) < 1000 or not getattr(tokenizer, "do_lower_case", True):
            return cls()
        return cls(words, tokenizer.tokenize, english_probability)

    def _known_uncached(self, word: str) -> bool:
        if word in self.vocabulary:
            return True
        pieces = self._tokenize(word) if self._tokenize is not None else []
        # a stem the vocabulary has plus one ending ("cancel" + "##ling"); foreign and made-up words fall apart
        return 0 < len(pieces) <= 2 and len(pieces[0]) >= 4

    def reason(self, text: str) -> str | None:
        """Why ``text`` is out of scope for an English intent model, or None when the model should decide."""
        letters = [c for c in text if c.isalpha()]
        if len(letters) < MIN_LETTERS:
            return NO_WORDS
        if sum(map(_latin, letters)) * 2 < len(letters):
            return UNSUPPORTED_SCRIPT
        words = _WORD.findall(text.lower())
        if len(words) < MIN_WORDS:
            return None
        if self.vocabulary and sum(map(self._known, words)) < MIN_KNOWN_SHARE * len(words):
            return UNRECOGNISED_WORDS
        # after the vocabulary rule: gibberish is no language, and most words of what is left look English
        if self._english is not None and self._english(text) < MAX_ENGLISH_PROBABILITY:
            return OTHER_LANGUAGE
        return None


def out_of_scope_reason(text: str) -> str | None:
    """The character rules only (no vocabulary): ``no_words`` or ``unsupported_script``."""
    return _PLAIN.reason(text)


_PLAIN = ScopeGate()

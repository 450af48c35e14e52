"""Label-preserving augmentation: change how a customer writes, never what they want.

Every transform keeps the words that decide an intent (the verbs and their objects) and changes only the
form around them: typos in other words, casing, punctuation, greetings and sign-offs, politeness, terse
and run-on forms, order numbers and names the training releases never used, and references to an order or
an account added to requests of every intent, so that no intent can be told apart by those nouns alone.
The last one is the contrastive part: "I can't pay for order 123" stays ``payment_issue`` although "order"
appears in most ``cancel_order`` texts, which is the confusion measured on an unseen release.

:func:`augment` draws one variant of a text; the training loop calls it afresh each epoch, so the model sees
a different variant of the same request every time and the originals still take ``1 - rate`` of the steps.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import asdict, dataclass

from training.slots import SLOT_RE, slot_value

#: words a typo must never touch: negations and the short words that carry an intent
PROTECTED = frozenset(
    {
        "not",
        "no",
        "don't",
        "dont",
        "can't",
        "cant",
        "cannot",
        "won't",
        "never",
        "isn't",
        "doesn't",
        "didn't",
        "without",
        "instead",
        "new",
        "old",
        "another",
        "other",
    }
)
GREETINGS = (
    "hi",
    "hello",
    "hey",
    "hi there",
    "hello team",
    "good morning",
    "good evening",
    "dear support",
    "excuse me",
    "um",
    "so",
    "ok so",
    "quick question",
    "sorry to bother you",
    "hey guys",
    "yo",
)
SIGN_OFFS = (
    "thanks",
    "thank you",
    "thx",
    "ty",
    "please",
    "pls",
    "asap",
    "thanks in advance",
    "cheers",
    "any help appreciated",
    "appreciate it",
    "thank you so much",
    "regards",
)
POLITE = (
    "could you please help me",
    "would you mind helping me",
    "i would appreciate some help",
    "please help",
    "kindly assist",
    "can someone help",
)
CONTEXT = (
    "i'm writing from my phone",
    "this is my first time contacting you",
    "i have been a customer for years",
    "i already looked on the website",
    "sorry for my english",
    "i'm in a bit of a hurry",
    "i tried calling earlier",
    "my name is {name}",
)
#: references to an order, a purchase or an account: present in requests of many intents
REFERENCES = (
    "for order {order}",
    "order {order}",
    "my order number is {order}",
    "ref {order}",
    "(order {order})",
    "for my purchase",
    "for my last order",
    "on my account",
    "my account is {email}",
    "for the item i bought",
    "it's about order {order}",
)
#: request openers a terse writer leaves out ("i want to cancel my order" -> "cancel my order")
OPENERS = re.compile(
    r"^(?:(?:hi|hello|hey)[,!. ]+)?(?:i (?:want|need|would like|wanna|'d like|d like|have) to|"
    r"i'm trying to|i am trying to|can you help me(?: to)?|could you help me(?: to)?|help me(?: to)?|"
    r"can you|could you|would you|please|i'd like to)\s+",
    re.IGNORECASE,
)
NAMES = (
    "Priya",
    "Kenji",
    "Amara",
    "Lars",
    "Sofia Rossi",
    "Diego Alvarez",
    "Mei Lin",
    "Noah Becker",
    "Chloe Martin",
    "Tariq Aziz",
    "Ines Duarte",
    "Pavel Novak",
    "Grace O'Neill",
    "Hana Sato",
)
#: each letter's right-hand neighbour on a QWERTY keyboard (the last of a row: its left-hand one)
KEYBOARD = {
    row[i]: row[i + 1] if i + 1 < len(row) else row[i - 1]
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i in range(len(row))
}
_WORD = re.compile(r"[A-Za-z']+")
_NUMBER = re.compile(r"(?<![A-Za-z])#?\d{3,}(?![A-Za-z])")


@dataclass(frozen=True)
class Augmentation:
    """How often each transform applies. ``rate``: the share of texts changed at all per epoch."""

    rate: float = 0.5
    typo: float = 0.35
    casing: float = 0.3
    punctuation: float = 0.35
    greeting: float = 0.2
    sign_off: float = 0.2
    polite: float = 0.08
    context: float = 0.08
    reference: float = 0.2
    terse: float = 0.15
    numbers: float = 0.8
    slots: float = 0.6

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _number(rng: random.Random, order: bool = True) -> str:
    digits = "".join(rng.choice(string.digits) for _ in range(rng.randint(4, 12)))
    return rng.choice(("", "", "", "#", "no. ") + (("ORD-", "A") if order else ())) + digits


def _email(rng: random.Random) -> str:
    return f"{rng.choice(('anna', 'k.lee', 'mo', 'sam.r', 'user1987'))}@{rng.choice(('mail.com', 'example.org'))}"


def _fill(template: str, rng: random.Random) -> str:
    return template.format(order=_number(rng), name=rng.choice(NAMES), email=_email(rng))


def typo(text: str, rng: random.Random) -> str:
    """One typo (swap, drop, double or a neighbouring key) in a word of 4+ letters that is not protected."""
    words = [m for m in _WORD.finditer(text) if len(m.group()) >= 4 and m.group().lower() not in PROTECTED]
    if not words:
        return text
    m = rng.choice(words)
    w, i = m.group(), rng.randrange(1, len(m.group()) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        new = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif kind == 1:
        new = w[:i] + w[i + 1 :]
    elif kind == 2:
        new = w[:i] + w[i] + w[i:]
    else:
        new = w[:i] + KEYBOARD.get(w[i].lower(), w[i]) + w[i + 1 :]
    return text[: m.start()] + new + text[m.end() :]


def casing(text: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.6:
        return text.lower()
    if choice < 0.85:
        return text[:1].upper() + text[1:]
    return text.upper()


def punctuation(text: str, rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.5:
        return re.sub(r"[?!.,;:]+", "", text).strip()
    if choice < 0.75:
        return text.rstrip("?!. ") + rng.choice(("?", "??", "!", "!!", "...", " ?"))
    return text.rstrip("?!. ")


def terse(text: str, rng: random.Random) -> str:
    """Drop the request opener ("i need to", "can you help me"): what is left still names the action."""
    shorter = OPENERS.sub("", text, count=1)
    return shorter if len(shorter.split()) >= 2 else text


def numbers(text: str, rng: random.Random) -> str:
    """Order numbers and other long digit runs replaced by values of another length and form."""
    return _NUMBER.sub(lambda _: _number(rng, order=False), text)


def slots(text: str, rng: random.Random) -> str:
    """``{{Slot}}`` placeholders filled with fresh values (otherwise they stay, as the 27K release writes them)."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1).lower()
        if "name" in name and "first" not in name and "last" not in name:
            return rng.choice(NAMES)
        if "number" in name or name.endswith(" id"):
            return _number(rng, order="order" in name)
        return slot_value(match.group(1), rng)

    return SLOT_RE.sub(value, text)


def augment(text: str, rng: random.Random, config: Augmentation = Augmentation()) -> str:
    """One variant of ``text`` (or ``text`` itself, ``1 - rate`` of the time)."""
    if rng.random() >= config.rate:
        return text
    out = text
    if SLOT_RE.search(out) and rng.random() < config.slots:
        out = slots(out, rng)
    if rng.random() < config.numbers:
        out = numbers(out, rng)
    if rng.random() < config.terse:
        out = terse(out, rng)
    if rng.random() < config.reference:
        ref = _fill(rng.choice(REFERENCES), rng)
        out = f"{out.rstrip('?!. ')} {ref}" + ("?" if out.rstrip().endswith("?") else "")
    if rng.random() < config.polite:
        out = f"{rng.choice(POLITE)}, {out[:1].lower()}{out[1:]}"
    if rng.random() < config.context:
        sentence = _fill(rng.choice(CONTEXT), rng)
        out = f"{sentence}. {out}" if rng.random() < 0.5 else f"{out.rstrip('.')}. {sentence}"
    if rng.random() < config.greeting:
        out = f"{rng.choice(GREETINGS)}{rng.choice((', ', ' ', '! ', '. '))}{out}"
    if rng.random() < config.sign_off:
        out = f"{out.rstrip()}{rng.choice((' ', ', ', '. '))}{rng.choice(SIGN_OFFS)}"
    kept = SLOT_RE.findall(out)  # placeholders that stay are written as the 27K release writes them
    out = SLOT_RE.sub(lambda m: f"\x00{kept.index(m.group(1))}\x00", out)
    for _ in range(rng.choice((1, 1, 2))):
        if rng.random() < config.typo:
            out = typo(out, rng)
    if rng.random() < config.punctuation:
        out = punctuation(out, rng)
    if rng.random() < config.casing:
        out = casing(out, rng)
    out = re.sub("\x00(\\d+)\x00", lambda m: "{{" + kept[int(m.group(1))] + "}}", out)
    out = " ".join(out.split())
    return out or text

"""``{{Slot}}`` placeholders as used by Bitext's 27K release: filling them and making them."""

from __future__ import annotations

import random
import re
import string

SLOT_RE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")

#: 4k5 entity_type -> the 27K release's slot name
ENTITY_SLOTS: dict[str, str] = {
    "order_id": "Order Number",
    "invoice_id": "Invoice Number",
    "account_type": "Account Type",
    "person_name": "Person Name",
    "delivery_city": "Delivery City",
    "delivery_country": "Delivery Country",
    "refund_amount": "Refund Amount",
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "account type": ("Free", "Freemium", "Premium", "Standard", "Gold", "Platinum", "Business", "Pro"),
    "account category": ("Free", "Premium", "Standard", "Gold", "Platinum", "Business"),
    "person name": ("John Smith", "Maria Garcia", "Wei Chen", "Fatima Khan", "Olga Ivanova", "Tom Baker"),
    "client first name": ("John", "Maria", "Wei", "Fatima", "Olga", "Tom", "Aisha", "Lucas"),
    "client last name": ("Smith", "Garcia", "Chen", "Khan", "Ivanova", "Baker", "Okafor", "Rossi"),
    "delivery city": ("Madrid", "London", "Chicago", "Toronto", "Sydney", "Berlin", "Lyon", "Osaka"),
    "delivery country": ("Spain", "the UK", "the USA", "Canada", "Australia", "Germany", "France", "Japan"),
    "currency symbol": ("$", "€", "£"),
    "online company portal info": ("the website", "our portal", "the customer area", "my account page"),
    "online order interaction": ("order history", "my orders", "purchase details", "order status page"),
    "customer support hours": ("9am-5pm", "24/7", "Monday to Friday"),
    "website url": ("www.example.com", "shop.example.com", "example.com/help"),
}


def slot_value(name: str, rng: random.Random) -> str:
    """A plausible random value for slot ``name`` (unknown slots get a neutral word)."""
    key = name.strip().lower()
    if key in _CHOICES:
        return rng.choice(_CHOICES[key])
    if "amount" in key or "price" in key or "fee" in key:
        return f"${rng.randint(5, 999)}.{rng.randint(0, 99):02d}"
    if "number" in key or key.endswith(" id"):
        digits = rng.randint(6, 12)
        prefix = rng.choice(("", "", "#", "ORD-")) if "order" in key else ""
        return prefix + "".join(rng.choice(string.digits) for _ in range(digits))
    if "phone" in key:
        return f"+1-{rng.randint(200, 999)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
    if "email" in key:
        return rng.choice(("john", "maria", "wei", "fatima")) + "@example.com"
    return rng.choice(("it", "this one", "the item"))


def fill_slots(text: str, rng: random.Random) -> str:
    """Replace every ``{{Slot}}`` in ``text`` with a value drawn from ``rng``."""
    return SLOT_RE.sub(lambda m: slot_value(m.group(1), rng), text)


def has_slots(text: str) -> bool:
    return SLOT_RE.search(text) is not None


def slot_entity(text: str, entity_type: str, start: int, end: int) -> str | None:
    """``text`` with its entity span replaced by the matching ``{{Slot}}``; None if not applicable."""
    slot = ENTITY_SLOTS.get(entity_type)
    if slot is None or not 0 <= start < end <= len(text):
        return None
    return f"{text[:start]}{{{{{slot}}}}}{text[end:]}"

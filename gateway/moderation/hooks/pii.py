"""The PII hook: e-mail addresses, phone numbers and payment card numbers.

MODERATION_PII_ACTION=redact (the default) replaces each with [EMAIL], [PHONE] or [CARD]
and lets the request through; =block refuses it (category "pii"). MODERATION_PII_KINDS
chooses which kinds are looked for. The raw text is scanned (no normalisation), so a
redacted message reaches the provider exactly as sent apart from the placeholders.

What counts, chosen to leave ordinary numbers alone:
- card: 13 to 19 digits (spaces or dashes allowed), first digit 2-6 (the major networks;
  millisecond timestamps start with 1) and a valid Luhn checksum;
- phone: 9 to 15 digits in groups, written as a phone number is: with a +country code,
  a (area code), dashes or dots between groups, or space-separated groups starting with 0
  ("020 7946 0958"). Lists like "10 20 30 40 50", dates, IPv4 addresses and unformatted
  digit runs are not phones; nor are short local numbers ("555-1234").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gateway.moderation.base import ALLOWED, ModerationHook, Verdict

EMAIL = (
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
CARD = r"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])"
PHONE = (
    r"(?<![\w+(.-])(?:\+[0-9]{8,15}|(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?"
    r"[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,5})(?![0-9]|[.-][0-9])"
)
PATTERNS = {"email": EMAIL, "card": CARD, "phone": PHONE}
PLACEHOLDERS = {"email": "[EMAIL]", "card": "[CARD]", "phone": "[PHONE]"}
LABELS = {"email": "an e-mail address", "card": "a payment card number", "phone": "a phone number"}
ACTIONS = ("redact", "block")

NOT_DIGIT = re.compile(r"[^0-9]")
DIGIT = re.compile(r"[0-9]")
NINE_DIGITS = re.compile(r"(?:[^0-9]*[0-9]){9}")  # the fewest a phone or card number has
PHONE_RE = re.compile(PHONE)
DATE_START = re.compile(r"(?:19|20)[0-9]{2}[-./](?:0?[1-9]|1[0-2])[-./]")
IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def is_card(text: str) -> bool:
    digits = NOT_DIGIT.sub("", text)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits)


def is_phone(text: str) -> bool:
    digits = NOT_DIGIT.sub("", text)
    if not 9 <= len(digits) <= 15 or DATE_START.match(text) or IPV4.fullmatch(text):
        return False
    formatted = text[0] in "+(" or "-" in text or "." in text
    return formatted or (" " in text and text[0] == "0")


class PiiHook(ModerationHook):
    name = "pii"

    def __init__(self) -> None:
        kinds = list(settings.MODERATION_PII_KINDS)
        unknown = sorted(set(kinds) - set(PATTERNS))
        if unknown:
            raise ImproperlyConfigured(
                f"MODERATION_PII_KINDS: unknown kind(s) {', '.join(unknown)}; expected some of {', '.join(PATTERNS)}"
            )
        if settings.MODERATION_PII_ACTION not in ACTIONS:
            raise ImproperlyConfigured(
                f"MODERATION_PII_ACTION={settings.MODERATION_PII_ACTION!r}; expected one of {', '.join(ACTIONS)}"
            )
        self.redacts = settings.MODERATION_PII_ACTION == "redact"
        self.kinds = [kind for kind in PATTERNS if kind in kinds]
        self.email = re.compile(EMAIL) if "email" in self.kinds else None
        numbers = "|".join(f"(?P<{kind}>{PATTERNS[kind]})" for kind in ("card", "phone") if kind in self.kinds)
        self.numbers = re.compile(numbers) if numbers else None

    def kind_of(self, match: re.Match) -> str | None:
        kind, text = match.lastgroup or "email", match[0]
        if kind == "card" and not is_card(text):
            # Not a card; it may still be a phone number written with spaces or dashes.
            return "phone" if "phone" in self.kinds and PHONE_RE.fullmatch(text) and is_phone(text) else None
        if kind == "phone" and not is_phone(text):
            return None
        return kind

    def scan(self, text: str) -> tuple[str, list[str]]:
        """The text with PII replaced by placeholders, and the kinds found in order."""
        found: list[str] = []

        def placeholder(match: re.Match) -> str:
            kind = self.kind_of(match)
            if kind is None:
                return match[0]
            found.append(kind)
            return PLACEHOLDERS[kind]

        # Most prompts hold no "@" and fewer than nine digits: two quick scans, and no regex runs.
        if self.email and "@" in text:
            text = self.email.sub(placeholder, text)
        if self.numbers and (digit := DIGIT.search(text)) and NINE_DIGITS.match(text, digit.start()):
            text = self.numbers.sub(placeholder, text)
        return text, found

    async def check(self, text: str) -> Verdict:
        redacted, found = self.scan(text)
        if not found:
            return ALLOWED
        if not self.redacts:
            return Verdict.block("pii", f"contains {LABELS[found[0]]}")
        counts = ", ".join(f"{found.count(kind)} {kind}" for kind in dict.fromkeys(found))
        return Verdict.redact(redacted, "pii", f"redacted {counts}")

    async def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        return [await self.check(text) for text in texts]

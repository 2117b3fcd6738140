"""Text normalisation for matching: one spelling for the many a prompt can use.

- Invisible characters are removed: every format character (Unicode category Cf: zero-width
  space and joiners, soft hyphen, word joiner, bidi controls, tag characters) and the other
  default-ignorable ones that are not Cf (variation selectors, the combining grapheme
  joiner, Hangul fillers). "k\u200bill" reads "kill".
- NFKC folds compatibility forms: full-width "ｋｉｌｌ", ligatures, circled and
  super/subscript letters, non-breaking spaces.
- casefold() (not lower()) for case-insensitive terms: "STRASSE" and "straße" agree.

Spaced-out words ("k.i.l.l", "k i l l") are collapsed into a second view of the text, only
where three or more single letters or digits stand each apart (the first and last too), so
"skill" or "k.ill" are left alone and words of two letters or more never merge. The only
text this joins is a word spelled letter by letter, which is the evasion itself; the
original view is matched too, so nothing that matched before stops matching.

Not covered, on purpose: diacritics are kept ("año" must not read "ano"), and look-alike
letters from other scripts (Cyrillic "а" for Latin "a") are not mapped: both would block
ordinary text in other languages.
"""

from __future__ import annotations

import re
import unicodedata

# Cf characters only exist in planes 0, 1 and 14: scanning those is 7 times quicker at import.
_CF = [
    chr(c) for plane in (range(0x20000), range(0xE0000, 0xE1000)) for c in plane if unicodedata.category(chr(c)) == "Cf"
]
# Default-ignorable code points outside Cf: combining grapheme joiner, Hangul fillers,
# Khmer inherent vowels, variation selectors (and their supplement, in plane 14).
_OTHER_IGNORABLE = "\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0" + "".join(map(chr, range(0xFE00, 0xFE10)))
_INVISIBLE = [*_CF, *_OTHER_IGNORABLE, *map(chr, range(0xE0100, 0xE01F0))]
# Two classes: re checks a class of BMP characters in constant time, but one holding any
# character past U+FFFF by a scan of its ranges, 30 times slower on every character.
INVISIBLE_BMP = re.compile("[" + re.escape("".join(c for c in _INVISIBLE if c <= "\uffff")) + "]")
INVISIBLE_ASTRAL = re.compile("[" + re.escape("".join(c for c in _INVISIBLE if c > "\uffff")) + "]")
ASTRAL = re.compile("[\U00010000-\U0010ffff]")

_ALNUM = r"[^\W_]"
_SEPARATORS = r"[\s.\-_*·•|+~/\\,:;'\"]+"
SPACED_OUT = re.compile(rf"(?<!{_ALNUM}){_ALNUM}(?:{_SEPARATORS}{_ALNUM}(?!{_ALNUM})){{2,}}")
# A cheaper test first (about a third quicker to rule a text out, which is nearly always):
# it starts with a separator instead of SPACED_OUT's lookbehind, so re skips ahead to one.
SPACED_OUT_HINT = re.compile(rf"{_SEPARATORS}{_ALNUM}{_SEPARATORS}{_ALNUM}(?!{_ALNUM})")
SEPARATORS = re.compile(_SEPARATORS)


def visible(text: str) -> str:
    """Invisible characters removed, then NFKC; case kept."""
    if text.isascii():  # ASCII holds no format character and is its own NFKC form
        return text
    text = INVISIBLE_BMP.sub("", text)
    if ASTRAL.search(text):
        text = INVISIBLE_ASTRAL.sub("", text)
    return unicodedata.normalize("NFKC", text)


def folded(text: str) -> str:
    """visible(text), casefolded: what case-insensitive terms are matched against."""
    return text.lower() if text.isascii() else visible(text).casefold()


def collapse_spaced_out(text: str) -> str | None:
    """The text with letter-by-letter runs ("k.i.l.l") joined, or None when it has none."""
    if SPACED_OUT_HINT.search(text) is None or SPACED_OUT.search(text) is None:
        return None
    return SPACED_OUT.sub(lambda match: SEPARATORS.sub("", match[0]), text)

"""The blocklist hook: terms and regular expressions edited in the admin (BlockedTerm).

Each worker holds the enabled terms compiled in memory (a VersionedSnapshot): a request
reads no database row, and an admin edit reaches every worker within
PULSE_LOCAL_CACHE_SECONDS. Literal terms are normalised like the text (see normalize.py)
and joined into one trie-shaped regular expression per case and word mode, so hundreds of
terms cost little more than one; regular-expression terms are matched one by one (joining
them would renumber their groups). The first load in a worker also adds the
MODERATION_BLOCKLIST terms that have no row yet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.conf import settings

from core.snapshot import VersionedSnapshot
from gateway.moderation.base import ALLOWED, ModerationHook, Verdict
from gateway.moderation.normalize import collapse_spaced_out, folded, visible
from gateway.moderation.patterns import NOT_AFTER, pattern_error

logger = logging.getLogger(__name__)

VERSION_KEY = "moderation:blocklist:version"


@dataclass(frozen=True)
class Term:
    id: int
    pattern: str
    is_regex: bool
    whole_word: bool
    case_insensitive: bool
    category: str

    def describe(self) -> str:
        kind = "regex" if self.is_regex else "term"
        return f"blocked {kind} #{self.id} {self.pattern!r}" + (" (whole word)" if self.whole_word else "")


def search_word_start(regex: re.Pattern, text: str) -> re.Match | None:
    """regex.search, keeping only a match that starts a word. Checked here rather than by a leading
    lookbehind, which would make re try every position instead of skipping to a likely one."""
    match = regex.search(text)
    while match and match.start() and text[match.start() - 1].isalnum():
        match = regex.search(text, match.start() + 1)
    return match


def _tokens(key: str) -> list[str]:
    return [r"\s+" if char == " " else re.escape(char) for char in key]


def trie_source(keys: Iterable[str]) -> str:
    """One regex matching any of the keys, sharing their prefixes (a trie): at each position the
    engine follows the one branch that fits, so hundreds of terms cost about as much as a few."""
    root: dict = {}
    for key in keys:
        node = root
        for token in _tokens(key):
            node = node.setdefault(token, {})
        node[""] = {}  # a key ends here

    def source(node: dict) -> str:
        branches = [token + source(child) for token, child in node.items() if token]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return source(root)


class TermSet:
    """Literal terms of one case mode, normalised like the text, as one trie regex per word mode.

    A term's words match across any whitespace. Which term matched is found from the matched text.
    """

    def __init__(self, terms: Iterable[Term], normalise: Callable[[str], str]):
        self.terms = list(terms)
        self.by_key: dict[tuple[bool, str], Term] = {}
        for term in self.terms:
            if key := " ".join(normalise(term.pattern).split()):
                self.by_key.setdefault((term.whole_word, key), term)
        self.searches = []
        for whole_word in (True, False):
            keys = sorted(key for whole, key in self.by_key if whole == whole_word)
            if keys:  # a whole word's start is checked by search_word_start
                tail = NOT_AFTER if whole_word else ""
                self.searches.append((re.compile(f"(?:{trie_source(keys)}){tail}"), whole_word))

    def search(self, text: str) -> Term | None:
        for regex, whole_word in self.searches:
            match = search_word_start(regex, text) if whole_word else regex.search(text)
            if match:
                return self.by_key[(whole_word, " ".join(match[0].split()))]
        return None


@dataclass(frozen=True)
class RegexTerm:
    regex: re.Pattern
    term: Term
    on_folded: bool  # searched in the casefolded view

    @classmethod
    def compiled(cls, term: Term) -> RegexTerm | None:
        if error := pattern_error(term.pattern, is_regex=True):  # a row saved around the admin's check
            logger.warning("blocklist regex #%s skipped: %s", term.id, error)
            return None
        # re.IGNORECASE makes re test every position (no quick skip to a literal prefix): about 8
        # times slower. A case-insensitive pattern written in lower case (as most are; an escape such
        # as \S or \W is not) means the same on the casefolded text without the flag.
        on_folded = term.case_insensitive and term.pattern == term.pattern.lower()
        pattern = term.pattern.casefold() if on_folded else term.pattern
        flags = re.IGNORECASE if term.case_insensitive and not on_folded else 0
        return cls(re.compile(f"(?:{pattern}){NOT_AFTER if term.whole_word else ''}", flags), term, on_folded)

    def search(self, text: str) -> bool:
        return bool(search_word_start(self.regex, text) if self.term.whole_word else self.regex.search(text))


def _first(regexes: list[RegexTerm], text: str) -> Term | None:
    return next((regex.term for regex in regexes if regex.search(text)), None)


class CompiledBlocklist:
    def __init__(self, terms: Iterable[Term]):
        terms = list(terms)
        self.folded = TermSet((t for t in terms if not t.is_regex and t.case_insensitive), folded)
        self.exact = TermSet((t for t in terms if not t.is_regex and not t.case_insensitive), visible)
        regexes = [regex for t in terms if t.is_regex and (regex := RegexTerm.compiled(t))]
        self.regexes = [regex for regex in regexes if not regex.on_folded]
        self.folded_regexes = [regex for regex in regexes if regex.on_folded]
        self.empty = not (self.folded.terms or self.exact.terms or regexes)

    def match(self, text: str) -> Term | None:
        """The first term found in the text, in its normalised and its collapsed ("k.i.l.l") views."""
        if self.empty:
            return None
        plain = visible(text)
        collapsed = collapse_spaced_out(plain)
        for view in (plain, collapsed) if collapsed else (plain,):
            if term := self._match_view(view):
                return term
        return None

    def _match_view(self, view: str) -> Term | None:
        if term := self.exact.search(view) or _first(self.regexes, view):
            return term
        if self.folded.searches or self.folded_regexes:
            low = view.casefold()
            return self.folded.search(low) or _first(self.folded_regexes, low)
        return None

    def verdict(self, text: str) -> Verdict:
        term = self.match(text)
        return Verdict.block(term.category, f"matched {term.describe()}") if term else ALLOWED


_seeded: dict[str, tuple[str, ...]] = {}


def seed_blocklist(terms: Sequence[str]) -> int:
    """Add the terms that have no row yet (never update one: admin edits win). Returns how many."""
    from gateway.models import BlockedTerm

    wanted = list(dict.fromkeys(term for term in terms if pattern_error(term, is_regex=False) is None))
    existing = set(BlockedTerm.objects.filter(is_regex=False, pattern__in=wanted).values_list("pattern", flat=True))
    missing = [BlockedTerm(pattern=term) for term in wanted if term not in existing]
    if missing:
        # ignore_conflicts: another worker seeding at the same moment is not an error.
        BlockedTerm.objects.bulk_create(missing, ignore_conflicts=True)
        blocklist_snapshot.bump()  # workers that loaded before this seeding reload
        logger.info("seeded %d blocklist term(s) from MODERATION_BLOCKLIST", len(missing))
    return len(missing)


def load_blocklist() -> CompiledBlocklist:
    from gateway.models import BlockedTerm

    seed = tuple(settings.MODERATION_BLOCKLIST)
    if _seeded.get("terms") != seed:
        seed_blocklist(seed)
        _seeded["terms"] = seed
    fields = ("id", "pattern", "is_regex", "whole_word", "case_insensitive", "category")
    return CompiledBlocklist(Term(*row) for row in BlockedTerm.objects.filter(enabled=True).values_list(*fields))


blocklist_snapshot: VersionedSnapshot[CompiledBlocklist] = VersionedSnapshot(VERSION_KEY, load_blocklist)


def reset_blocklist() -> None:
    """Forget this worker's copy and seeding (tests)."""
    blocklist_snapshot.reset()
    _seeded.clear()


class BlocklistHook(ModerationHook):
    name = "blocklist"

    async def check_many(self, texts: Sequence[str]) -> list[Verdict]:
        blocklist = await blocklist_snapshot.aget()
        return [blocklist.verdict(text) for text in texts]

    async def check(self, text: str) -> Verdict:
        return (await self.check_many([text]))[0]

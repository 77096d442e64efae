"""Priority rules an operator writes in `[triage]`: VIP senders, keywords, impact x urgency.

Rules answer "which priority does this rule give, and why" and nothing else; combining
them with the model is `triage.Triage`'s job. Keywords match whole words in the subject
and the body after the same normalization the classifier uses (Persian spelling unified,
case folded), so "فوري" with an Arabic yeh matches a configured "فوری" and "URGENT"
matches "urgent".
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from postdesk.config import TriageSettings
from postdesk.ingest.textnorm import normalize_persian


@dataclass(frozen=True)
class RuleHit:
    """A priority a rule gives a ticket, and which rule (`source`, stored on the ticket)."""

    priority: str
    source: str


def _normalize(text: str) -> str:
    return normalize_persian(unicodedata.normalize("NFKC", text)).casefold()


def _keyword_pattern(keywords: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    originals: dict[str, str] = {}
    parts: list[str] = []
    for word in sorted(keywords, key=len, reverse=True):
        key = " ".join(_normalize(word).split())
        if not key or key in originals:
            continue
        originals[key] = word
        parts.append(r"\s+".join(re.escape(piece) for piece in key.split(" ")))
    pattern = (
        re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)") if parts else re.compile(r"(?!)")
    )
    return pattern, originals


class PriorityRules:
    """The `[triage]` priority rules, compiled once."""

    def __init__(self, settings: TriageSettings) -> None:
        self.levels = settings.priority_levels
        self.vip_senders = frozenset(s.lower() for s in settings.vip_senders)
        self.vip_domains = tuple(d.lower() for d in settings.vip_domains)
        self.vip_priority = settings.vip_priority
        # Highest priority first, so the first level whose words appear wins.
        by_rank = sorted(settings.keywords, key=lambda kv: self.rank(kv[0]), reverse=True)
        self.keywords = [(level, *_keyword_pattern(words)) for level, words in by_rank if words]
        self.matrix = {(impact, urgency): prio for impact, urgency, prio in settings.matrix}

    @property
    def configured(self) -> bool:
        """Whether any sender or keyword rule exists (the matrix needs models)."""
        return bool(self.vip_senders or self.vip_domains or self.keywords)

    def rank(self, priority: str | None) -> int:
        """Position of `priority` among the levels (higher is more urgent); -1 if unknown."""
        if priority is None or priority not in self.levels:
            return -1
        return self.levels.index(priority)

    def vip(self, sender_email: str) -> RuleHit | None:
        """The VIP rule `sender_email` falls under, if any."""
        email = sender_email.strip().lower()
        if not email:
            return None
        if email in self.vip_senders:
            return RuleHit(self.vip_priority, f"rule:vip-sender:{email}")
        domain = email.rpartition("@")[2]
        for vip in self.vip_domains:
            if domain == vip or domain.endswith("." + vip):
                return RuleHit(self.vip_priority, f"rule:vip-domain:{vip}")
        return None

    def keyword(self, subject: str, body: str) -> RuleHit | None:
        """The highest priority whose keywords appear in the subject or body, if any."""
        if not self.keywords:
            return None
        text = _normalize(f"{subject}\n{body}")
        for level, pattern, originals in self.keywords:
            match = pattern.search(text)
            if match:
                word = originals.get(" ".join(match.group(0).split()), match.group(0))
                return RuleHit(level, f"rule:keyword:{word}")
        return None

    def hits(self, subject: str, body: str, sender_email: str) -> list[RuleHit]:
        """Every sender and keyword rule that applies, VIP first."""
        return [hit for hit in (self.vip(sender_email), self.keyword(subject, body)) if hit]

    def from_matrix(self, impact: str, urgency: str) -> RuleHit | None:
        """The priority the impact x urgency matrix gives, if it has that cell."""
        priority = self.matrix.get((impact, urgency))
        if priority is None:
            return None
        return RuleHit(priority, f"matrix:impact={impact},urgency={urgency}")

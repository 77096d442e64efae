"""QA scorecards: the rubric a review is scored against, written as a TOML file.

```toml
name = "support"
[[criterion]]
key = "tone"
title = "Greeting and tone"            # `title_fa` for the Persian label
scale = "1-5"                          # "pass-fail" | "1-3" | "1-4" | "1-5"
weight = 2
na_allowed = true
critical = false                       # rated below half: the whole review scores 0
root_causes = ["template misuse", "rude wording"]
```

A file is read by the config file's reader (`postdesk.config.parse_document`), so a
mistake is one line naming the file, the key and the fix. A scorecard's identity is its
name; its version is the SHA-256 of its canonical JSON (`content_hash`), so editing a
title or a weight makes a new version while a changed comment or layout does not.
postdesk ships a default scorecard (`scorecards/default.toml`, English and Persian).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from postdesk.config import Key, option, parse_document, read_toml
from postdesk.errors import ConfigError

Scale = Literal["pass-fail", "1-3", "1-4", "1-5"]
SCALES: dict[str, tuple[int, int]] = {
    "pass-fail": (0, 1),
    "1-3": (1, 3),
    "1-4": (1, 4),
    "1-5": (1, 5),
}
"""Each scale's lowest and highest rating (pass-fail: fail 0, pass 1)."""

MANY_CRITERIA = 10
"""More criteria than this draws a warning: long rubrics make reviews slow and noisy."""

DEFAULT_NAME = "default"

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _criterion_key(value: str, key: Key) -> str:
    value = value.strip()
    if not _KEY.match(value):
        raise key.fail(
            f"{value!r} is not a criterion key; use lower-case letters, digits, - and _ "
            '(e.g. "tone"), as the CSV files of reviews name it'
        )
    return value


def _scorecard_name(value: str, key: Key) -> str:
    value = value.strip()
    if not _NAME.match(value):
        raise key.fail(
            f"{value!r} is not a scorecard name; use letters, digits, '.', '-' and '_' "
            '(e.g. "support"), as `--scorecard NAME` takes it'
        )
    return value


def _title(value: str, key: Key) -> str:
    value = value.strip()
    if not value:
        raise key.fail('must not be empty; the label reviewers see, e.g. "Greeting and tone"')
    return value


def _weight(value: float, key: Key) -> float:
    if value <= 0:
        raise key.fail(f"got {value:g}; expected a positive number (how much it counts)")
    return value


def _root_causes_fa(value: tuple[str, ...], key: Key) -> tuple[str, ...]:
    english = key.siblings.get("root_causes", ())
    if value and len(value) != len(english):
        raise key.fail(
            f"has {len(value)} entries and root_causes {len(english)}; give one Persian "
            "label per root cause, in the same order, or leave it out"
        )
    return value


@dataclass(frozen=True)
class Criterion:
    """One question of a scorecard and how its answers count."""

    key: str = field(metadata=option(_criterion_key, names_entry=True))
    title: str = field(metadata=option(_title))
    scale: Scale
    title_fa: str = ""
    description: str = ""
    description_fa: str = ""
    weight: float = field(default=1.0, metadata=option(_weight))
    na_allowed: bool = False
    critical: bool = False
    root_causes: tuple[str, ...] = ()
    root_causes_fa: tuple[str, ...] = field(default=(), metadata=option(_root_causes_fa))

    @property
    def lowest(self) -> int:
        return SCALES[self.scale][0]

    @property
    def highest(self) -> int:
        return SCALES[self.scale][1]

    @property
    def ratings(self) -> tuple[int, ...]:
        """Every rating on the scale, lowest first."""
        return tuple(range(self.lowest, self.highest + 1))

    def label(self, language: str = "en") -> str:
        """The title reviewers read, in `language` ("en" or "fa") when there is one."""
        return self.title_fa if language == "fa" and self.title_fa else self.title


def _criteria(value: tuple[Criterion, ...], key: Key) -> tuple[Criterion, ...]:
    if not value:
        raise key.fail("needs at least one [[criterion]] with key, title and scale")
    seen: set[str] = set()
    for criterion in value:
        if criterion.key in seen:
            raise key.renamed(f"criterion {criterion.key!r}").fail(
                "the key is used twice; give each criterion its own key"
            )
        seen.add(criterion.key)
    return value


@dataclass(frozen=True)
class Scorecard:
    """A rubric: its name, labels and criteria, in the order reviewers answer them."""

    name: str = field(metadata=option(_scorecard_name))
    criteria: tuple[Criterion, ...] = field(metadata=option(_criteria, key="criterion"))
    title: str = ""
    title_fa: str = ""
    path: Path | None = field(default=None, metadata=option(in_file=False), compare=False)

    def criterion(self, key: str) -> Criterion | None:
        """The criterion called `key`, if the scorecard has one."""
        return next((c for c in self.criteria if c.key == key), None)

    def definition(self) -> dict[str, Any]:
        """The scorecard as JSON data: what is stored with each version and hashed."""
        return {
            "name": self.name,
            "title": self.title,
            "title_fa": self.title_fa,
            "criteria": [_criterion_json(c) for c in self.criteria],
        }

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON definition: same rubric, same hash."""
        canonical = json.dumps(
            self.definition(), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def warnings(self) -> list[str]:
        """What is allowed but worth a second look, one line each."""
        where = str(self.path) if self.path is not None else self.name
        if len(self.criteria) > MANY_CRITERIA:
            return [
                f"{where}: {len(self.criteria)} criteria; more than {MANY_CRITERIA} make "
                "reviews slow and ratings less reliable, consider merging some"
            ]
        return []

    @classmethod
    def from_definition(cls, data: dict[str, Any]) -> Scorecard:
        """A scorecard from the JSON stored with its version (`definition()`)."""
        criteria = tuple(
            Criterion(
                **{
                    **c,
                    "root_causes": tuple(c.get("root_causes", ())),
                    "root_causes_fa": tuple(c.get("root_causes_fa", ())),
                }
            )
            for c in data["criteria"]
        )
        return cls(
            name=data["name"],
            criteria=criteria,
            title=data.get("title", ""),
            title_fa=data.get("title_fa", ""),
        )


def _criterion_json(criterion: Criterion) -> dict[str, Any]:
    data = asdict(criterion)
    data["root_causes"] = list(criterion.root_causes)
    data["root_causes_fa"] = list(criterion.root_causes_fa)
    return data


class ScorecardError(ConfigError):
    """A scorecard file is missing, unreadable or invalid (one line: file, key, fix)."""


def load_scorecard(path: str | Path) -> Scorecard:
    """Read and check the scorecard TOML file at `path`."""
    p = Path(path)
    try:
        data = read_toml(p, missing="no such scorecard file; give the path of a .toml scorecard")
        return parse_document(data, Scorecard, p, given={"path": p})
    except ScorecardError:
        raise
    except ConfigError as exc:
        raise ScorecardError(exc.path, exc.key, exc.problem) from None


def default_scorecard_path() -> Path:
    """The scorecard postdesk ships (seven criteria, English and Persian labels)."""
    return Path(str(resources.files("postdesk.qa") / "scorecards" / "default.toml"))


def default_scorecard() -> Scorecard:
    """The shipped scorecard, loaded."""
    return load_scorecard(default_scorecard_path())

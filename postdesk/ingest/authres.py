"""Reading `Authentication-Results` (RFC 8601): did the sender's domain vouch for a mail?

The receiving mail server checks SPF, DKIM and DMARC and writes what it found at the top
of the message, under its own id (the "authserv-id"):

    Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=example.com;
        dkim=pass header.d=example.com; dmarc=pass header.from=example.com

Anyone can write such a header into the mail they send, so only the topmost one carrying
an id the operator configured (`[authentication] authserv_id`) is read: the server puts
its own above everything that came with the mail (and good servers remove look-alikes).

`check_domain` then decides for the domain of the From address: a DMARC `fail` fails; a
DMARC `pass` passes; without a DMARC result, an SPF or DKIM pass *aligned* with that
domain passes, and neither fails. Alignment is relaxed (the domains are equal, or one is
a subdomain of the other); without the public-suffix list, sibling subdomains
(a.example.com, b.example.com) do not count as aligned, which can only refuse a mail,
never accept one.

The parser reads each character once (no backtracking regex) and ignores headers longer
than MAX_HEADER: a hostile header costs at most that much work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

MAX_HEADER = 8192
HEADER = "authentication-results"


@dataclass(frozen=True)
class MethodResult:
    """One method's result, e.g. dkim=pass with its properties (header.d=example.com)."""

    method: str  # spf, dkim, dmarc, ... (lower-case, version dropped)
    result: str  # pass, fail, softfail, none, ... (lower-case)
    properties: dict[str, str] = field(default_factory=dict)  # "header.d" -> "example.com"


@dataclass(frozen=True)
class AuthResults:
    """One Authentication-Results header, parsed."""

    authserv_id: str  # lower-case
    results: tuple[MethodResult, ...]


@dataclass(frozen=True)
class Verdict:
    """Whether the sender's domain vouched for a mail, and a sentence saying why."""

    passed: bool
    why: str


def _tokens(value: str) -> list[list[str]]:
    """The header split into `;`-separated parts of tokens; `=` is a token of its own.

    Comments (nested parentheses) are dropped, quoted strings become one token without
    their quotes, backslash escapes are honoured inside both.
    """
    parts: list[list[str]] = [[]]
    token: list[str] = []
    depth = 0
    quoted = escape = False

    def flush() -> None:
        if token:
            parts[-1].append("".join(token))
            token.clear()

    for ch in value:
        if escape:
            escape = False
            if not depth:
                token.append(ch)
        elif ch == "\\" and (quoted or depth):
            escape = True
        elif quoted:
            if ch == '"':
                quoted = False
            else:
                token.append(ch)
        elif ch == "(":
            depth += 1
        elif depth:
            if ch == ")":
                depth -= 1
        elif ch == '"':
            quoted = True
        elif ch == ";":
            flush()
            parts.append([])
        elif ch == "=":
            flush()
            parts[-1].append("=")
        elif ch.isspace():
            flush()
        else:
            token.append(ch)
    flush()
    return parts


def parse(value: str) -> AuthResults | None:
    """One header's value, parsed; None when it is too long or has no authserv-id."""
    if len(value) > MAX_HEADER:
        return None
    head, *rest = _tokens(value)
    if not head or head[0] == "=":
        return None
    results: list[MethodResult] = []
    for part in rest:
        # method "=" result *( name "=" value ), names and values single tokens.
        if len(part) < 3 or part[1] != "=" or part[2] == "=":
            continue  # "none", or a part we cannot read
        properties: dict[str, str] = {}
        for i in range(3, len(part) - 2, 3):
            name, equals, prop = part[i : i + 3]
            if equals != "=" or "=" in (name, prop):
                break
            properties[name.lower()] = prop.lower()
        method = part[0].partition("/")[0].lower()
        results.append(MethodResult(method, part[2].lower(), properties))
    return AuthResults(head[0].lower(), tuple(results))


def trusted(values: Iterable[str], authserv_ids: Collection[str]) -> AuthResults | None:
    """The topmost header (values in the order they appear) from one of `authserv_ids`."""
    for value in values:
        found = parse(value)
        if found is not None and found.authserv_id in authserv_ids:
            return found
    return None


def trusted_header(values: Iterable[str], authserv_ids: Collection[str]) -> str | None:
    """The text of the header `trusted` would read (unfolded, at most MAX_HEADER long), or
    None: what is recorded on each message for rules that need it later."""
    for value in values:
        found = parse(value)
        if found is not None and found.authserv_id in authserv_ids:
            return " ".join(value.split())
    return None


def _domain(value: str) -> str:
    """The domain of an address or a bare domain, lower-case, without a trailing dot."""
    return value.rpartition("@")[2].strip().strip("<>").rstrip(".").lower()


def aligned(domain: str, other: str) -> bool:
    """Relaxed alignment, approximated: equal, or one is a subdomain of the other."""
    if not domain or not other:
        return False
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def check_domain(results: AuthResults, domain: str) -> Verdict:
    """Whether `results` show that `domain` (the From address's) sent the mail."""
    domain = _domain(domain)
    by = results.authserv_id
    dmarc = [
        r
        for r in results.results
        if r.method == "dmarc" and _domain(r.properties.get("header.from", domain)) == domain
    ]
    if any(r.result == "fail" for r in dmarc):
        return Verdict(False, f"DMARC failed for {domain} (Authentication-Results from {by})")
    if any(r.result == "pass" for r in dmarc):
        return Verdict(True, f"DMARC passed for {domain} (Authentication-Results from {by})")
    for r in results.results:
        if r.result != "pass":
            continue
        if r.method == "spf":
            source = r.properties.get("smtp.mailfrom") or r.properties.get("smtp.helo", "")
        elif r.method == "dkim":
            source = r.properties.get("header.d") or r.properties.get("header.i", "")
        else:
            continue
        if aligned(domain, _domain(source)):
            return Verdict(
                True,
                f"{r.method.upper()} passed aligned with {domain} "
                f"(Authentication-Results from {by})",
            )
    return Verdict(
        False,
        f"neither SPF nor DKIM passed aligned with {domain} (Authentication-Results from {by})",
    )

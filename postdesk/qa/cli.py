"""`postdesk qa ...`: samples of solved tickets, reviews made elsewhere, reviewer agreement."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Connection

from postdesk.clikit import (
    Context,
    format_options,
    json_option,
    output_format,
    pass_context,
    print_json,
)
from postdesk.errors import PostdeskError
from postdesk.qa.scorecard import DEFAULT_NAME, Scorecard, default_scorecard, load_scorecard
from postdesk.qa.store import (
    StoredScorecard,
    register_scorecard,
    scorecard_names,
    stored_scorecard,
)
from postdesk.tables import Field, delimited, json_rows, pick, table_lines
from postdesk.tickets.render import screen


@click.group()
def qa() -> None:
    """Quality assurance: sample solved tickets, score them, import reviews, check agreement.

    \b
    Example:
      $ postdesk qa sample --n 30 --reviewer lead@example.com
      $ postdesk qa score --reviewer lead@example.com
    """


def _warn(scorecard: Scorecard) -> None:
    for warning in scorecard.warnings():
        click.echo(f"postdesk: warning: {warning}", err=True)


def _scorecard(conn: Connection, spec: str | None) -> StoredScorecard:
    """--scorecard: a TOML file (stored as a new version when it changed), or the name of
    a stored scorecard (its latest version); by default postdesk's own scorecard."""
    if spec is not None and (spec.endswith(".toml") or Path(spec).is_file()):
        scorecard = load_scorecard(spec)
        _warn(scorecard)
        return register_scorecard(conn, scorecard)
    name = spec or DEFAULT_NAME
    if name == DEFAULT_NAME:
        return register_scorecard(conn, default_scorecard())
    return stored_scorecard(conn, name)


def _day(value: datetime | None, default: datetime) -> datetime:
    return default if value is None else value.replace(tzinfo=UTC)


_DATE = click.DateTime(formats=["%Y-%m-%d"])


SAMPLE_COLUMNS = (
    "ticket",
    "inclusion_probability",
    "stratum",
    "reviewers",
    "blind",
    "risk_weight",
    "risk",
)


@qa.command("sample")
@click.option(
    "--scorecard",
    metavar="FILE.toml|NAME",
    help="Scorecard the sample is for: a TOML file, or a stored name (default: postdesk's).",
)
@click.option(
    "--since",
    type=_DATE,
    metavar="DATE",
    help="Tickets solved or closed from this day on (default: 7 days before --until).",
)
@click.option(
    "--until",
    type=_DATE,
    metavar="DATE",
    help="... and up to the end of this day, UTC (default: today).",
)
@click.option("--queue", metavar="MAILBOX", help="Only tickets of this mailbox (by its name).")
@click.option("--agent", metavar="EMAIL", help="Only tickets assigned to this agent.")
@click.option("--n", "n", type=int, metavar="N", help="Draw N tickets in all.")
@click.option("--per-agent", type=int, metavar="N", help="Draw N tickets per agent (stratified).")
@click.option(
    "--risk",
    is_flag=True,
    help="Risk-weighted: low CSAT, reopened, long, unsure triage, many messages weigh more.",
)
@click.option("--seed", type=int, help="Random seed; the same seed redraws the same sample.")
@click.option(
    "--reviewer",
    "reviewers",
    multiple=True,
    metavar="NAME",
    help="Assign the tickets to this reviewer; repeat it to split them evenly.",
)
@click.option(
    "--overlap",
    type=float,
    default=0.0,
    show_default=True,
    help="Share of tickets also given, blind, to a second reviewer (calibration).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be drawn; store nothing.")
@format_options(SAMPLE_COLUMNS)
@pass_context
def qa_sample(
    obj: Context,
    scorecard: str | None,
    since: datetime | None,
    until: datetime | None,
    queue: str | None,
    agent: str | None,
    n: int | None,
    per_agent: int | None,
    risk: bool,
    seed: int | None,
    reviewers: tuple[str, ...],
    overlap: float,
    dry_run: bool,
    output: str | None,
    columns: str | None,
    as_json: bool,
) -> None:
    """Draw solved or closed tickets for QA review, and assign them to reviewers.

    Give --n N for N tickets (simple random) or --per-agent N for N per agent
    (stratified); add --risk to favour risky tickets (with unequal probabilities).
    Each ticket's inclusion probability is stored with it, so the quality score
    estimates all tickets, not only the drawn ones. A ticket already sampled or
    reviewed with the same scorecard is not drawn again. The seed is printed: the same
    seed on the same tickets draws the same sample (try it with --dry-run).

    --format csv or tsv prints the drawn tickets as rows (the line with the seed goes
    to stderr); JSON is the whole draw, its "tickets" cut to --columns if given.

    \b
    Example:
      $ postdesk qa sample --per-agent 5 --since 2026-11-01 --reviewer lead@example.com
      $ postdesk qa sample --n 30 --risk --dry-run
      $ postdesk qa sample --n 30 --format csv --columns ticket,reviewers > sample.csv
    """
    from postdesk.qa.frame import Period
    from postdesk.qa.samples import SampleRequest, draw_sample

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = _day(until, today) + timedelta(days=1)
    start = _day(since, end - timedelta(days=7))
    request = SampleRequest(
        period=Period(start, end),
        n=n,
        per_agent=per_agent,
        risk=risk,
        queue=queue,
        agent=agent,
        seed=seed,
        reviewers=[r.strip().lower() for r in reviewers if r.strip()],
        overlap=overlap,
    )
    request.check()
    fmt = output_format(output, as_json)
    fields = pick(_sample_fields(), columns, None)
    settings = obj.settings()
    if queue is not None:
        settings.mailbox(queue)  # an unknown queue: one line naming the known ones
    with obj.database().transaction() as session:
        conn = session.connection()
        stored = _scorecard(conn, scorecard)
        result = draw_sample(conn, stored, request, save=not dry_run, settings=settings)
    data = result.as_json()
    if fmt == "json":
        if columns is not None:
            data["tickets"] = json_rows(data["tickets"], fields)
        print_json(data)
        return
    what = "would draw" if dry_run else f"sample #{result.saved.id}:" if result.saved else "drew"
    summary = (
        f"{what} {len(result.tickets)} of {result.frame_size} eligible ticket(s), "
        f"design {request.design}, seed {result.seed}, scorecard {stored.label}"
    )
    if fmt in ("csv", "tsv"):
        click.echo(summary, err=True)  # the seed is worth keeping; stdout stays a table
        click.echo(delimited(data["tickets"], fields, "," if fmt == "csv" else "\t"), nl=False)
        return
    click.echo(summary)
    if data["tickets"]:
        out = screen(UTC, datetime.now(UTC))
        click.echo("\n".join(table_lines(data["tickets"], fields, out)))


def _sample_fields() -> list[Field]:
    def listed(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: ", ".join(r[key]) or "-"

    return [
        Field("ticket", "#", lambda r: str(r["ticket"]), right=True),
        Field(
            "inclusion_probability", "p", lambda r: f"{r['inclusion_probability']:.3f}", right=True
        ),
        Field("stratum", "stratum", lambda r: r["stratum"] or "-", max_width=24, shrink_to=8),
        Field("reviewers", "reviewers", listed("reviewers"), max_width=40, shrink_to=12),
        Field("blind", "blind", lambda r: "blind double" if r["blind"] else "-"),
        Field("risk_weight", "risk", lambda r: f"{r['risk_weight']:g}", right=True),
        Field("risk", "why", listed("risk")),
    ]


@qa.command("score")
@click.option(
    "--reviewer",
    required=True,
    metavar="EMAIL",
    help="Whose queue to score (as `qa sample --reviewer` assigned it).",
)
@click.option(
    "--scorecard",
    metavar="NAME",
    help="Only tickets sampled for this scorecard (default: every assigned ticket).",
)
@click.option(
    "--blind",
    is_flag=True,
    help="Hide the agent and other reviewers' scores on every ticket (blind double "
    "assignments always do).",
)
@pass_context
def qa_score(obj: Context, reviewer: str, scorecard: str | None, blind: bool) -> None:
    """Score your assigned tickets in the terminal, one key per answer.

    Shows the next ticket as a transcript (customer and agent messages, internal
    notes, times, CSAT, SLA), then asks each criterion of the scorecard: the scale's
    digits (p/f for pass-fail), n for N/A where allowed, c comment, r root-cause tags,
    b back, s skip the ticket, q (or Ctrl-C) quit, Enter keep an answer or finish.
    Each answer is saved when given: after an interruption, run it again and it
    resumes at the first unanswered criterion. The review's score (0 when a critical
    criterion fails) is shown at the end of each ticket.

    \b
    Example:
      $ postdesk qa score --reviewer lead@example.com
    """
    import sys

    from postdesk.qa.score import run_session
    from postdesk.qa.store import scorecard_names

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise PostdeskError("qa score is interactive; run it in a terminal")
    reviewer = reviewer.strip().lower()
    db = obj.database()
    if scorecard is not None:
        with db.read_session() as session:
            known = scorecard_names(session.connection())
        if scorecard not in known:
            listed = ", ".join(known) or "none is stored yet"
            raise PostdeskError(f"no scorecard named {scorecard!r} ({listed})")
    from postdesk.qa.terminal import PromptToolkitTerminal

    run_session(db, PromptToolkitTerminal(), reviewer, scorecard_name=scorecard, blind=blind)


@qa.command("import-reviews")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--scorecard",
    "scorecard_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The scorecard TOML file the reviews were made with.",
)
@pass_context
def qa_import_reviews(obj: Context, file: Path, scorecard_file: Path) -> None:
    """Import reviews made elsewhere from a CSV file.

    Columns (header row): ticket,reviewer,criterion,rating and optionally comment; one
    row per answer. rating is a number on the criterion's scale (pass-fail: 1 or 0) or
    NA. Every row is checked first: with any bad row nothing is imported, and the error
    names each bad line and why.

    \b
    Example:
      $ postdesk qa import-reviews reviews.csv --scorecard scorecard.toml
    """
    from postdesk.qa.imports import import_reviews, read_reviews

    scorecard = load_scorecard(scorecard_file)
    _warn(scorecard)
    reviews = read_reviews(file, scorecard)
    with obj.database().transaction() as session:
        conn = session.connection()
        stored = register_scorecard(conn, scorecard)
        result = import_reviews(conn, file, stored, reviews)
    click.echo(
        f"imported {result.reviews} review(s) ({result.ratings} ratings) of "
        f"{result.tickets} ticket(s) by {result.reviewers} reviewer(s), scorecard {stored.label}"
        + (" (new version)" if stored.new else "")
    )
    if result.incomplete:
        click.echo(
            f"{result.incomplete} review(s) answer only some criteria; the others count as "
            "not rated"
        )


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@qa.command("agreement")
@click.option(
    "--scorecard",
    metavar="NAME",
    help="Scorecard whose reviews to compare (default: the only one with reviews).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(100, 100_000),
    default=1000,
    show_default=True,
    help="Resamples for the 95% interval of alpha.",
)
@json_option
@pass_context
def qa_agreement(obj: Context, scorecard: str | None, bootstrap: int, as_json: bool) -> None:
    """How well reviewers agree, per criterion and overall, on tickets two or more rated.

    Shows percent agreement, Krippendorff's alpha (ordinal for rating scales, nominal
    for pass-fail; any number of reviewers, missing ratings allowed) with a bootstrap
    95% interval, and Cohen's kappa (linearly weighted for rating scales) where exactly
    two reviewers rated. Alpha below 0.667 is flagged unreliable.

    QA ratings are mostly "pass", so kappa and alpha can be low while percent agreement
    is high: chance agreement is high when nearly everything passes. Read both; a low
    alpha with high agreement means reviewers disagree on the rare failures.

    \b
    Example:
      $ postdesk qa agreement --json
    """
    from postdesk.qa.agreement import RELIABLE, agreement_report, collect
    from postdesk.qa.store import scorecard_names

    with obj.database().read_session() as session:
        conn = session.connection()
        if scorecard is None:
            names = [n for n in scorecard_names(conn) if _has_reviews(conn, n)]
            if len(names) != 1:
                listed = ", ".join(names) if names else "none has finished reviews yet"
                raise PostdeskError(f"name the scorecard with --scorecard NAME ({listed})")
            scorecard = names[0]
        latest = stored_scorecard(conn, scorecard)
        collected = collect(conn, latest)
    report = agreement_report(collected, resamples=bootstrap)
    report["scorecard"] = {"name": latest.name, "versions": collected.versions}
    report["reliable_alpha"] = RELIABLE
    if as_json:
        print_json(report)
        return
    click.echo(f"scorecard {latest.name} (versions {collected.versions or '-'})")
    click.echo(
        f"{'criterion':<16} {'items':>5} {'agree':>6} {'alpha':>6} {'95% CI':>15} {'kappa':>6}"
    )
    rows: list[tuple[str, dict[str, Any]]] = [
        *report["per_criterion"].items(),
        ("overall", report["overall"]),
    ]
    for key, r in rows:
        ci = r["alpha_ci"]
        ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"
        flag = "  unreliable" if r["unreliable"] and r["n_items"] else ""
        click.echo(
            f"{key:<16} {r['n_items']:>5} {_number(r['percent_agreement'], 2):>6} "
            f"{_number(r['krippendorff_alpha']):>6} {ci_text:>15} "
            f"{_number(r['cohen_kappa']):>6}{flag}"
        )


def _has_reviews(conn: Connection, name: str) -> bool:
    from sqlalchemy import exists, select

    from postdesk.models import QaReview, QaScorecard

    query = select(
        exists().where(
            QaReview.scorecard_id == QaScorecard.id,
            QaScorecard.name == name,
            QaReview.finished_at.is_not(None),
        )
    )
    return bool(conn.execute(query).scalar())


def _seconds(value: float | None) -> str:
    """A duration for people: 2d 03:04, 5:06:07 or 12:34 (minutes:seconds)."""
    if value is None:
        return "-"
    total = round(value)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}:{minutes:02d}"
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _kpi_value(*path: str) -> Callable[[dict[str, Any]], Any]:
    def value(row: dict[str, Any]) -> Any:
        for key in path:
            row = row[key]
        return row

    return value


KPI_COLUMNS: dict[str, tuple[str, ...]] = {
    "group_kind": ("group_kind",),
    "group": ("group",),
    "volume": ("volume",),
    "frt_median_s": ("first_response", "median_s"),
    "frt_p90_s": ("first_response", "p90_s"),
    "frt_median_business_s": ("first_response", "median_business_s"),
    "resolution_median_s": ("resolution", "median_s"),
    "resolution_p90_s": ("resolution", "p90_s"),
    "resolution_median_business_s": ("resolution", "median_business_s"),
    "one_touch_rate": ("one_touch_rate",),
    "reopen_rate": ("reopen_rate",),
    "sla_breach_rate": ("sla_breach_rate",),
    "backlog": ("backlog", "total"),
    "csat_responses": ("csat", "responses"),
    "csat_mean": ("csat", "mean"),
}


def _kpi_fields() -> list[Field]:
    def shown(name: str, path: tuple[str, ...]) -> Callable[[dict[str, Any]], str]:
        get = _kpi_value(*path)
        if name.endswith("_s"):
            return lambda r: _seconds(get(r))
        if name.endswith("_rate"):
            return lambda r: _share(get(r))
        return lambda r: "-" if get(r) is None else str(get(r))

    return [
        Field(
            name,
            name,
            shown(name, path),
            _kpi_value(*path),
            right=name not in ("group_kind", "group"),
            max_width=28 if name == "group" else None,
            shrink_to=10 if name == "group" else None,
        )
        for name, path in KPI_COLUMNS.items()
    ]


@click.command("kpi")
@click.option(
    "--since",
    type=_DATE,
    metavar="DATE",
    help="Period start, UTC (default: 30 days before --until).",
)
@click.option(
    "--until",
    type=_DATE,
    metavar="DATE",
    help="Period end: the end of this day, UTC (default: today).",
)
@click.option("--queue", metavar="MAILBOX", help="Only tickets of this mailbox (by its name).")
@click.option("--agent", metavar="EMAIL", help="Only tickets assigned to this agent.")
@format_options(tuple(KPI_COLUMNS))
@pass_context
def kpi(
    obj: Context,
    since: datetime | None,
    until: datetime | None,
    queue: str | None,
    agent: str | None,
    output: str | None,
    columns: str | None,
    as_json: bool,
) -> None:
    """Support KPIs for a period, overall, per queue and per agent.

    \b
    Tickets: not merged, written by a person; "as of" is the period's end (or now).
    volume           tickets created in the period
    first_response   created in the period and answered: creation -> first agent response
    resolution       last solved in the period: creation -> that solve (reopened time counts)
                     both: median and 90th percentile (numpy "linear", type 7), in calendar
                     seconds and business seconds of the mailbox's calendar (else 24x7)
    one_touch_rate   solved in the period with exactly one agent response: a reply sent
                     through the outbox (relayed or `tickets reply`), or an agent's own
                     mail that was not relayed (imported history, proven Bcc)
    reopen_rate      first solved in the period, then back to new/open/pending by "as of"
    sla_breach_rate  created in the period with an SLA clock breached as of "as of"
    backlog          not solved or closed as of "as of", by age: <1d, 1-7d, 7-30d, >30d
    csat             answers given in the period: responses, mean, share of 4 and 5
    by_queue/by_agent  the same per mailbox and per current assignee ("-": none)

    --format csv|tsv: one row per group (group_kind all, queue or agent), times in
    seconds; --columns picks them (then the table shows just those too, and
    --format json prints the rows instead of the report).

    \b
    Example:
      $ postdesk kpi --since 2026-11-01 --until 2026-11-30
      $ postdesk kpi --queue billing --json
      $ postdesk kpi --format csv > kpis.csv
    """
    from postdesk.models import utcnow
    from postdesk.qa.kpi import KpiPeriod, kpi_report

    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = _day(until, today) + timedelta(days=1)
    start = _day(since, end - timedelta(days=30))
    if start >= end:
        raise PostdeskError("--since must not be after --until")
    settings = obj.settings()
    if queue is not None:
        settings.mailbox(queue)  # an unknown queue: one line naming the known ones
    with obj.database().read_session() as session:
        report = kpi_report(
            session.connection(), settings, KpiPeriod(start, end, now), queue=queue, agent=agent
        )
    fmt = output_format(output, as_json)
    fields = pick(_kpi_fields(), columns, None)
    groups = [{"group_kind": "all", "group": "all", **report}]
    groups += [{"group_kind": "queue", "group": k, **v} for k, v in report["by_queue"].items()]
    groups += [{"group_kind": "agent", "group": k, **v} for k, v in report["by_agent"].items()]
    if fmt == "json":
        print_json(report if columns is None else json_rows(groups, fields))
        return
    if fmt in ("csv", "tsv"):
        click.echo(delimited(groups, fields, "," if fmt == "csv" else "\t"), nl=False)
        return
    click.echo(f"KPIs {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d} (UTC)")
    if columns is not None:
        click.echo("\n".join(table_lines(groups, fields, screen(UTC, now))))
        return
    rows: list[tuple[str, dict[str, Any]]] = [("all", report)]
    rows += [(f"queue {k}", v) for k, v in report["by_queue"].items()]
    rows += [(f"agent {k}", v) for k, v in report["by_agent"].items()]
    click.echo(
        f"{'':<28} {'vol':>4} {'FRT med':>9} {'FRT p90':>9} {'biz med':>9} "
        f"{'RES med':>9} {'RES p90':>9} {'biz med':>9} {'1-touch':>7} {'reopen':>6} "
        f"{'SLA br':>6} {'backlog':>7} {'CSAT':>9}"
    )
    for name, r in rows:
        fr, res, csat = r["first_response"], r["resolution"], r["csat"]
        csat_text = f"{csat['mean']:.2f} ({csat['responses']})" if csat["responses"] else "-"
        click.echo(
            f"{name[:28]:<28} {r['volume']:>4} {_seconds(fr['median_s']):>9} "
            f"{_seconds(fr['p90_s']):>9} {_seconds(fr['median_business_s']):>9} "
            f"{_seconds(res['median_s']):>9} {_seconds(res['p90_s']):>9} "
            f"{_seconds(res['median_business_s']):>9} {_share(r['one_touch_rate']):>7} "
            f"{_share(r['reopen_rate']):>6} {_share(r['sla_breach_rate']):>6} "
            f"{r['backlog']['total']:>7} {csat_text:>9}"
        )
    b = report["backlog"]
    click.echo(
        f"backlog by age: <1d {b['lt_1d']}, 1-7d {b['1d_7d']}, 7-30d {b['7d_30d']}, "
        f">30d {b['gt_30d']}"
    )
    if report["csat"]["responses"]:
        click.echo(f"CSAT 4-5: {_share(report['csat']['share_4_5'])}")


def _iqs_text(row: dict[str, Any] | None) -> str:
    if row is None or row["iqs"] is None:
        return "-"
    return f"{row['iqs']:5.1f}  [{row['ci_low']:5.1f}, {row['ci_high']:5.1f}]"


@qa.command("report")
@click.option(
    "--scorecard",
    metavar="NAME",
    help="Scorecard whose reviews to report (default: the only one with reviews).",
)
@click.option(
    "--since",
    type=_DATE,
    metavar="DATE",
    help="Tickets resolved from this day on, UTC (default: no limit).",
)
@click.option(
    "--until",
    type=_DATE,
    metavar="DATE",
    help="... and up to the end of this day, UTC (default: no limit).",
)
@click.option(
    "--csv",
    "as_csv",
    is_flag=True,
    help="Print one CSV table: group_kind, group, n, iqs, ci_low, ci_high.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE.png",
    help="Also draw the weekly trend and per-agent and per-criterion bars into a PNG.",
)
@json_option
@pass_context
def qa_report(
    obj: Context,
    scorecard: str | None,
    since: datetime | None,
    until: datetime | None,
    as_csv: bool,
    plot: Path | None,
    as_json: bool,
) -> None:
    """The IQS per agent, category, criterion and week, and the top root causes.

    \b
    The IQS (internal quality score, 0-100) estimates the mean review score of ALL
    tickets the samples were drawn from, not only the reviewed ones: each reviewed
    ticket counts with 1 / its inclusion probability (Hajek's weighted mean), so
    tickets a risk-weighted sample favoured do not pull the score down. A simple
    random sample gives the plain mean. 95% interval: linearization, t distribution.
    \b
    - Counted: finished reviews with the scorecard (all its versions) of tickets
      resolved (solved, else closed) in the period. n is reviewed tickets: a ticket
      two reviewers scored counts once, with the mean of their scores.
    - Imported reviews (qa import-reviews) have no inclusion probability: they are
      left out of the IQS, and counted with their plain mean apart.
    - per criterion: the criterion's own score x 100, N/A left out.
    - per week: the ISO week (2026-W45) the ticket was resolved in.
    - per agent: the ticket's assignee; per category: its category ("-": none).
    - root causes: every tag given (imported reviews too): count, share of all tags.
    \b
    --json keys: scorecard {name, versions}, period {since, until, of}, weighting,
    reviews, tickets, weighted {reviews, tickets}, unweighted {reviews, tickets,
    mean}, iqs (a row, or null), by_agent, by_category, by_criterion (rows also with
    title, title_fa), by_week (lists of rows: group_kind, group, n, reviews, iqs,
    ci_low, ci_high, standard_error), root_causes (criterion, root_cause, count,
    share). --csv: the rows as one table.

    \b
    Example:
      $ postdesk qa report --since 2026-11-01 --until 2026-11-30
      $ postdesk qa report --plot iqs.png
    """
    from postdesk.qa.report import Period, build_report, collect, to_csv

    if as_json and as_csv:
        raise PostdeskError("give --json or --csv, not both")
    start = None if since is None else since.replace(tzinfo=UTC)
    end = None if until is None else until.replace(tzinfo=UTC) + timedelta(days=1)
    if start is not None and end is not None and start >= end:
        raise PostdeskError("--since must not be after --until")
    period = Period(start, end)
    with obj.database().read_session() as session:
        conn = session.connection()
        if scorecard is None:
            names = [n for n in scorecard_names(conn) if _has_reviews(conn, n)]
            if len(names) > 1:
                raise PostdeskError(
                    f"name the scorecard with --scorecard NAME ({', '.join(names)})"
                )
            if not names:
                raise PostdeskError(
                    "no finished QA reviews yet: draw a sample (qa sample), score it "
                    "(qa score) or import reviews (qa import-reviews)"
                )
            scorecard = names[0]
        latest = stored_scorecard(conn, scorecard)
        collected = collect(conn, latest, period)
    report = build_report(collected, latest.scorecard.criteria, latest.name, period)
    if not collected.tickets:
        when = ""
        if start or end:
            first = f"{start:%Y-%m-%d}" if start else "the start"
            last = f"{end - timedelta(days=1):%Y-%m-%d}" if end else "today"
            when = f" resolved from {first} to {last}"
        raise PostdeskError(f"no finished reviews with scorecard {latest.name} of tickets{when}")
    if plot is not None:
        from postdesk.qa.charts import write_chart

        if report["iqs"] is None:
            raise PostdeskError("nothing to plot: no reviewed ticket has an inclusion probability")
        write_chart(report, plot)
    if as_json:
        print_json(report)
        return
    if as_csv:
        click.echo(to_csv(report), nl=False)
        return
    _print_report(report)
    if plot is not None:
        click.echo(f"chart written to {plot}")


def _print_report(report: dict[str, Any]) -> None:
    versions = ", ".join(f"v{v}" for v in report["scorecard"]["versions"])
    period = report["period"]
    if period["since"] or period["until"]:
        last = "-"
        if period["until"]:
            last = f"{datetime.fromisoformat(period['until']) - timedelta(days=1):%Y-%m-%d}"
        span = f"tickets resolved {period['since'] or '-'} to {last}"
    else:
        span = "all reviewed tickets"
    click.echo(f"QA report · scorecard {report['scorecard']['name']} ({versions}) · {span}")
    weighted, unweighted = report["weighted"], report["unweighted"]
    overall = report["iqs"]
    if overall:
        click.echo(
            f"IQS {_iqs_text(overall)}  from {overall['n']} reviewed ticket(s) "
            f"({weighted['reviews']} review(s)), weighted by 1 / inclusion probability"
        )
    else:
        click.echo("IQS -: no reviewed ticket was drawn by a sample (inclusion probability)")
    if unweighted["reviews"]:
        mean = "-" if unweighted["mean"] is None else f"{unweighted['mean']:.1f}"
        click.echo(
            f"{unweighted['reviews']} imported review(s) of {unweighted['tickets']} ticket(s) "
            f"have no inclusion probability: left out of the IQS (their plain mean {mean})"
        )
    sections = [
        ("agent", report["by_agent"]),
        ("category", report["by_category"]),
        ("criterion", report["by_criterion"]),
        ("week", report["by_week"]),
    ]
    width = max([24, *(len(r["group"]) + 2 for _, rs in sections for r in rs)])
    width = min(width, 40)
    for title, rows in sections:
        if not rows:
            continue
        click.echo("")
        click.echo(f"{'per ' + title:<{width}} {'n':>4}   IQS   95% CI")
        for r in rows:
            click.echo(f"  {r['group'][: width - 2]:<{width - 2}} {r['n']:>4} {_iqs_text(r)}")
    causes = report["root_causes"]
    if causes:
        click.echo("")
        click.echo("most frequent root causes")
        click.echo(f"  {'count':>5} {'share':>6}  criterion / root cause")
        for c in causes[:10]:
            click.echo(
                f"  {c['count']:>5} {c['share']:>6.0%}  {c['criterion']} / {c['root_cause']}"
            )
        if len(causes) > 10:
            click.echo(f"  ... {len(causes) - 10} more (--json lists all)")

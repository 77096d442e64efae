"""`postdesk model ...`: train, evaluate, inspect and switch the triage models.

Thin, like the rest of the CLI: options are parsed here, the work is done by
postdesk.classify. Models are referred to by version (`category-3`), by target (`category`,
meaning its active model) or by the path of a model file (from `train --out`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from postdesk.classify.errors import ModelError, TrainingDataError
from postdesk.clikit import (
    TICKET_NUMBER,
    Context,
    format_options,
    json_option,
    output_format,
    pass_context,
    print_json,
)
from postdesk.config import CONFIG_ENV, DEFAULT_CONFIG, Settings
from postdesk.errors import PostdeskError

if TYPE_CHECKING:
    from postdesk.classify.data import LabelledData
    from postdesk.classify.store import ModelStore
    from postdesk.classify.training import Progress, TrainedModel

# scikit-learn and skops take a second to import: every command imports them when it
# runs, so the rest of postdesk's CLI does not pay for them.

DEFAULT_TARGET_PRECISION = 0.9
# The same value as training.NO_CONFIDENT_REGION, without importing scikit-learn for it.
NO_CONFIDENT_REGION = 1.0 - 1e-6


class _TerminalProgress:
    """Training progress as a bar per stage on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar: Any = None
        self.done = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.done = 0
            self.bar = click.progressbar(length=max(total, 1), label=stage, file=sys.stderr)
            self.bar.__enter__()
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
            self.done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        self.stage = None


class _LineProgress:
    """Training progress when stderr is not a terminal (a log, a pipe): a line when a
    stage starts and one when it ends, with its time, so a long run is never silent."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.started = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.started = time.monotonic()
            steps = f" ({total} steps)" if total > 1 else ""
            click.echo(f"training: {stage}{steps}...", err=True)
        if done >= total:
            click.echo(
                f"training: {stage} done in {time.monotonic() - self.started:.1f}s", err=True
            )
            self.stage = None


def _progress() -> Progress:
    return _TerminalProgress() if sys.stderr.isatty() else _LineProgress()


def _optional_settings(obj: Context) -> Settings | None:
    """The settings if a config file was named or exists; commands that need no
    database or store (training to a file, evaluating a file) work without one."""
    if obj.config or os.environ.get(CONFIG_ENV) or Path(DEFAULT_CONFIG).exists():
        return obj.settings()
    return None


def _store(obj: Context) -> ModelStore:
    from postdesk.classify.store import ModelStore

    return ModelStore(obj.settings().data_dir)


def _target_precision(obj: Context, given: float | None) -> float:
    if given is not None:
        if not 0.5 <= given < 1.0:
            raise PostdeskError("--target-precision must be from 0.5 to below 1")
        return given
    settings = _optional_settings(obj)
    return settings.triage.target_precision if settings else DEFAULT_TARGET_PRECISION


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.endswith(".skops") or Path(ref).is_file()


def _load(obj: Context, ref: str) -> TrainedModel:
    from postdesk.classify.store import load_model_file

    if _looks_like_path(ref):
        return load_model_file(ref)
    store = _store(obj)
    return store.load(store.resolve(ref))


def _columns(text: str | None) -> list[str]:
    columns = [c.strip() for c in (text or "").split(",") if c.strip()]
    if not columns:
        raise PostdeskError("name the text columns with --text, e.g. --text subject,body")
    return columns


def _csv_data(
    csv_path: Path | None,
    text: str | None,
    label: str | None,
    delimiter: str | None,
    time: str | None = None,
) -> LabelledData:
    from postdesk.classify.data import read_csv

    if csv_path is None:
        raise PostdeskError("give the data with --csv FILE --text COL[,COL...] --label COL")
    if not label:
        raise PostdeskError("name the label column with --label, e.g. --label category")
    if delimiter is not None and len(delimiter.replace("\\t", "\t")) != 1:
        raise PostdeskError("--delimiter must be one character (\\t for a tab)")
    sep = delimiter.replace("\\t", "\t") if delimiter else None
    time_column = time.strip() if time else None
    return read_csv(csv_path, _columns(text), label, delimiter=sep, time_column=time_column)


def _split(data: LabelledData, holdout: float | None, seed: int, part: str) -> LabelledData:
    from postdesk.classify.data import grouped_holdout_split, time_ordered_split

    if holdout is None:
        return data
    if data.times is not None:
        # Train on the older tickets, hold out the newest, as a team deploys a model.
        train, test = time_ordered_split(data, holdout)
        split = "time-ordered"
    else:
        # Near-duplicates on one side, as in every held-out number postdesk reports.
        train, test = grouped_holdout_split(data, holdout, seed)
        split = "grouped"
    chosen = train if part == "train" else test
    source = {**data.source, "holdout": holdout, "seed": seed, "part": part, "split": split}
    return data.subset(chosen).with_source(source)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _threshold_words(threshold: Any, target_precision: Any) -> str:
    if threshold is None or float(threshold) >= NO_CONFIDENT_REGION:
        return (
            f"no confident region: no threshold reaches precision {target_precision}, "
            "every ticket goes to needs-triage"
        )
    return f"threshold {float(threshold):.3f}"


def _cv_line(meta: dict[str, Any]) -> str:
    cv = meta["cv"]
    return (
        f"held-out macro-F1 {cv['macro_f1']:.3f}, accuracy {cv['accuracy']:.3f}, "
        f"coverage {cv['coverage']:.3f} at precision >= {meta['target_precision']} "
        f"({_threshold_words(meta.get('threshold'), meta['target_precision'])})"
    )


def _print_metrics(meta: dict[str, Any]) -> None:
    """What training measured on held-out folds: the summary line and each label's scores."""
    cv = meta["cv"]
    click.echo(f"  {_cv_line(meta)}")
    split = cv.get("split")
    if split:
        click.echo(f"  held-out folds: {split}")
    per_class = cv.get("per_class") or {}
    if not per_class:
        return
    width = max([len(str(label)) for label in per_class] + [5])
    click.echo(f"  {'label':<{width}}  precision  recall      f1  support")
    for name, row in per_class.items():
        click.echo(
            f"  {name:<{width}}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  "
            f"{row['f1']:>6.3f}  {row['support']:>7}"
        )


@click.group()
def model() -> None:
    """Train, evaluate and manage the triage models (category, priority).

    \b
    Example:
      $ postdesk model list
      $ postdesk model train --from-db
    """


@model.command()
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Labelled tickets."
)
@click.option("--text", metavar="COL[,COL...]", help="Text columns: the subject, then the body.")
@click.option("--label", metavar="COL", help="The column holding the label.")
@click.option(
    "--delimiter", metavar="CHAR", help="CSV delimiter (default: guessed from the header)."
)
@click.option(
    "--from-db", is_flag=True, help="Learn from tickets whose labels people set or confirmed."
)
@click.option(
    "--target",
    metavar="NAME",
    help="What the model predicts (default: the --label column; with --from-db: both).",
)
@click.option(
    "--holdout",
    type=float,
    metavar="FRACTION",
    help="Leave this share of the CSV out, near-duplicates together (see `evaluate --holdout`).",
)
@click.option(
    "--time",
    "time_column",
    metavar="COL",
    help="A column with each ticket's time: --holdout then holds out the newest tickets.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits and folds.")
@click.option("--baseline", is_flag=True, help="Train the plain reference model instead.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the model to this file instead of the model store.",
)
@click.option("--force", is_flag=True, help="Activate the new model whatever the checks say.")
@click.option(
    "--accept-labels",
    is_flag=True,
    help="Let a model that adds labels to the active model's become active.",
)
@click.option(
    "--target-precision",
    type=float,
    metavar="P",
    help="Precision confident predictions must reach (default: [triage], else 0.9).",
)
@json_option
@pass_context
def train(
    obj: Context,
    csv_path: Path | None,
    text: str | None,
    label: str | None,
    delimiter: str | None,
    from_db: bool,
    target: str | None,
    holdout: float | None,
    time_column: str | None,
    seed: int,
    baseline: bool,
    out: Path | None,
    force: bool,
    accept_labels: bool,
    target_precision: float | None,
    as_json: bool,
) -> None:
    """Train a model from a CSV export or from the tickets in the database.

    A model trained into the store becomes active by itself only if its coverage at the
    target precision reaches [triage] min_coverage, it predicts the active model's labels
    (more only with --accept-labels), and its held-out macro-F1 is not worse than the
    active model's on the same split. Otherwise it is stored and `model promote`
    activates it; --force activates it anyway.

    \b
    Example:
      $ postdesk model train --csv tickets.csv --text subject,body --label category
      $ postdesk model train --from-db --target priority
    """
    from postdesk.classify.store import check_target, save_model_file
    from postdesk.classify.training import train_model

    if from_db:
        if csv_path is not None or out is not None or holdout is not None or baseline:
            raise PostdeskError("--from-db trains into the store; drop --csv/--out/--holdout")
        if time_column is not None:
            raise PostdeskError("--from-db uses the tickets' own times; drop --time")
        _train_from_db(obj, target, force, accept_labels, seed, as_json)
        return
    data = _split(_csv_data(csv_path, text, label, delimiter, time_column), holdout, seed, "train")
    name = check_target(target or (label or "").strip().lower().replace("-", "_"))
    precision = _target_precision(obj, target_precision)
    progress = _progress()
    trained = train_model(
        data,
        target=name,
        baseline=baseline,
        target_precision=precision,
        seed=seed,
        progress=progress,
    )
    if out is not None:
        save_model_file(trained, out)
        if as_json:
            print_json(trained.metadata)
            return
        click.echo(
            f"trained a {name} model on {trained.metadata['data']['rows']} tickets in "
            f"{trained.metadata['training_seconds']:.1f}s"
        )
        _print_metrics(trained.metadata)
        click.echo(f"wrote {out}")
        return
    from postdesk.classify.promotion import register_model

    settings = obj.settings()
    registration = register_model(
        _store(obj),
        trained,
        data,
        force=force,
        accept_labels=accept_labels,
        min_coverage=settings.triage.min_coverage,
        progress=progress,
    )
    if as_json:
        print_json(
            {
                **trained.metadata,
                "version": registration.version,
                "activated": registration.activated,
                "reason": registration.reason,
            }
        )
        return
    click.echo(
        f"trained {registration.version} on {trained.metadata['data']['rows']} tickets in "
        f"{trained.metadata['training_seconds']:.1f}s"
    )
    _print_metrics(trained.metadata)
    _report_registration(registration)


def _report_registration(registration: Any) -> None:
    if registration.activated:
        click.echo(
            f"{registration.version} is now the active {registration.target} model "
            f"({registration.reason})"
        )
    else:
        click.echo(f"{registration.version} was not activated: {registration.reason}")


def _train_from_db(
    obj: Context, target: str | None, force: bool, accept_labels: bool, seed: int, as_json: bool
) -> None:
    from postdesk.classify.promotion import retrain_from_db
    from postdesk.classify.triage import TICKET_TARGETS

    if target is not None and target not in TICKET_TARGETS:
        raise PostdeskError(f"--from-db trains {', '.join(TICKET_TARGETS)}; not {target!r}")
    targets = (target,) if target else TICKET_TARGETS
    outcomes = retrain_from_db(
        obj.settings(),
        obj.database(),
        targets=targets,
        force=force,
        accept_labels=accept_labels,
        seed=seed,
        progress=_progress(),
    )
    store = _store(obj)
    if as_json:
        print_json(
            [
                {
                    "target": o.target,
                    "skipped": o.skipped,
                    "version": o.registration.version if o.registration else None,
                    "activated": o.registration.activated if o.registration else False,
                    "reason": o.registration.reason if o.registration else None,
                    "cv": store.metadata(o.registration.version).get("cv")
                    if o.registration
                    else None,
                }
                for o in outcomes
            ]
        )
    else:
        for outcome in outcomes:
            if outcome.registration is None:
                click.echo(f"{outcome.target}: not trained: {outcome.skipped}")
            else:
                meta = store.metadata(outcome.registration.version)
                click.echo(
                    f"trained {outcome.registration.version} on {meta['data']['rows']} "
                    f"tickets in {meta['training_seconds']:.1f}s"
                )
                _print_metrics(meta)
                _report_registration(outcome.registration)
    if all(o.registration is None for o in outcomes):
        raise TrainingDataError("no model was trained (see above)")


@model.command()
@click.argument("model_ref", metavar="[MODEL]", required=False)
@click.option(
    "--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False), help="Labelled tickets."
)
@click.option("--text", metavar="COL[,COL...]", help="Text columns: the subject, then the body.")
@click.option("--label", metavar="COL", help="The column holding the true label.")
@click.option(
    "--delimiter", metavar="CHAR", help="CSV delimiter (default: guessed from the header)."
)
@click.option(
    "--holdout",
    type=float,
    metavar="FRACTION",
    help="Evaluate only the share `train --holdout` left out (same --seed).",
)
@click.option(
    "--time",
    "time_column",
    metavar="COL",
    help="A column with each ticket's time: --holdout then holds out the newest tickets.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits and folds.")
@click.option(
    "--cv",
    "folds",
    type=int,
    metavar="K",
    help="Instead of a MODEL: k-fold cross-validation of training on the CSV.",
)
@click.option("--baseline", is_flag=True, help="With --cv: cross-validate the plain reference.")
@click.option("--target-precision", type=float, metavar="P", help="With --cv (default 0.9).")
@json_option
@pass_context
def evaluate(
    obj: Context,
    model_ref: str | None,
    csv_path: Path | None,
    text: str | None,
    label: str | None,
    delimiter: str | None,
    holdout: float | None,
    time_column: str | None,
    seed: int,
    folds: int | None,
    baseline: bool,
    target_precision: float | None,
    as_json: bool,
) -> None:
    """Measure MODEL on labelled tickets: macro-F1, accuracy, per-class precision/recall/F1,
    the confusion matrix, and the coverage at the target precision.

    \b
    Example:
      $ postdesk model evaluate category-3 --csv holdout.csv --text subject,body --label category
      $ postdesk model evaluate --csv tickets.csv --text subject,body --label category --cv 5
    """
    from postdesk.classify.training import cross_evaluate

    data = _csv_data(csv_path, text, label, delimiter, time_column)
    if folds is not None:
        if model_ref is not None or holdout is not None:
            raise PostdeskError("--cv trains its own models: give no MODEL and no --holdout")
        if time_column is not None:
            raise PostdeskError(
                "--cv folds are grouped, not time-ordered; for a time-ordered check train "
                "and evaluate with --holdout FRACTION --time COL"
            )
        name = (label or "label").strip().lower()
        result = cross_evaluate(
            data,
            target=name,
            folds=folds,
            baseline=baseline,
            target_precision=_target_precision(obj, target_precision),
            seed=seed,
            progress=_progress(),
        )
    else:
        if model_ref is None:
            raise PostdeskError("name the MODEL to evaluate (or use --cv K)")
        if baseline:
            raise PostdeskError("--baseline goes with --cv (or train one with train --baseline)")
        trained = _load(obj, model_ref)
        result = trained.evaluate(_split(data, holdout, seed, "test"))
        if trained.version is None:
            result["model"] = model_ref
    if as_json:
        print_json(result)
        return
    _print_evaluation(result)


def _print_evaluation(result: dict[str, Any]) -> None:
    click.echo(f"model {result['model']} ({result['target']}) on {result['rows']} tickets")
    click.echo(f"macro-F1  {result['macro_f1']:.4f}")
    click.echo(f"accuracy  {result['accuracy']:.4f}")
    threshold = result.get("threshold")
    click.echo(
        f"coverage  {result['coverage']:.4f} at target precision {result['target_precision']}"
        + (f" (threshold {threshold:.4f})" if threshold is not None else "")
        + f"; precision of those: {_pct(result['confident_precision'])}"
    )
    if "folds" in result:
        click.echo(
            f"{result['cv_folds']}-fold CV: macro-F1 per fold {result['fold_macro_f1_mean']:.4f}"
            f" ± {result['fold_macro_f1_std']:.4f}"
        )
    labels = result["confusion"]["labels"]
    width = max([len(str(label)) for label in labels] + [5])
    click.echo("")
    click.echo(f"{'label':<{width}}  precision  recall      f1  support")
    for label, row in result["per_class"].items():
        click.echo(
            f"{label:<{width}}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  "
            f"{row['f1']:>6.3f}  {row['support']:>7}"
        )
    click.echo("")
    click.echo("confusion (rows: true, columns: predicted, in the order above)")
    for label, counts in zip(labels, result["confusion"]["matrix"], strict=True):
        click.echo(f"{label:<{width}}  " + " ".join(f"{c:>5}" for c in counts))


@model.command()
@click.argument("model_ref", metavar="MODEL")
@click.argument("text")
@click.option("--subject", default="", help="The ticket's subject (TEXT is the body).")
@json_option
@pass_context
def predict(obj: Context, model_ref: str, text: str, subject: str, as_json: bool) -> None:
    """Predict the label of one ticket's TEXT with MODEL.

    \b
    Example:
      $ postdesk model predict category-3 "I was charged twice" --subject "Refund"
    """
    from postdesk.classify.text import ticket_matrix

    trained = _load(obj, model_ref)
    labels, probabilities = trained.predict(ticket_matrix([subject], [text]))
    probability = float(probabilities[0])
    threshold = trained.threshold
    confident = threshold is not None and probability >= threshold
    name = trained.version or model_ref
    precision = trained.target_precision
    if threshold is None:
        words = (
            f"{name} has no confident region (no threshold reaches precision {precision}), so "
            "every ticket goes to needs-triage"
        )
    elif confident:
        words = f"at or above {name}'s threshold {threshold:.3f} (precision {precision}): applied"
    else:
        words = (
            f"below {name}'s threshold {threshold:.3f} (precision {precision}): unsure, the "
            "ticket goes to needs-triage"
        )
    result = {
        "model": name,
        "target": trained.target,
        "label": labels[0],
        "probability": round(probability, 4),
        "threshold": threshold,
        "target_precision": precision,
        "confident_region": threshold is not None,
        "needs_triage": not confident,
        "explanation": f"guess {labels[0]!r} with probability {probability:.3f}; {words}",
    }
    if as_json:
        print_json(result)
        return
    click.echo(f"guess        {labels[0]}")
    click.echo(f"probability  {probability:.3f}")
    click.echo(
        "threshold    "
        + (f"{threshold:.3f} for precision {precision}" if threshold is not None else "none")
    )
    click.echo(f"verdict      {words}")


MODEL_COLUMNS = (
    "active",
    "version",
    "target",
    "created",
    "rows",
    "macro_f1",
    "coverage",
    "threshold",
)


def _model_fields() -> list[Any]:
    from postdesk.tables import Field

    def share(key: str) -> Any:
        return lambda r: _pct(r[key]) if r[key] is not None else "-"

    return [
        Field("active", "", lambda r: "*" if r["active"] else ""),
        Field("version", "version"),
        Field("target", "target"),
        Field(
            "created",
            "created (UTC)",
            lambda r: str(r["created_at"] or "-")[:16].replace("T", " "),
            lambda r: r["created_at"],
        ),
        Field("rows", "tickets", right=True),
        Field("macro_f1", "macro-F1", share("cv_macro_f1"), lambda r: r["cv_macro_f1"], right=True),
        Field("coverage", "coverage", share("cv_coverage"), lambda r: r["cv_coverage"], right=True),
        Field("threshold", "threshold", lambda r: _threshold_cell(r["threshold"]), right=True),
    ]


def _threshold_cell(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


@model.command("list")
@format_options(MODEL_COLUMNS)
@pass_context
def list_(obj: Context, output: str | None, columns: str | None, as_json: bool) -> None:
    """List the stored models; * marks the active one of each target. The table leaves
    out the threshold (--columns adds it); CSV, TSV and JSON have every column.

    \b
    Example:
      $ postdesk model list
      $ postdesk model list --format csv --columns version,target,macro_f1
    """
    from postdesk.models import utcnow
    from postdesk.tables import delimited, json_rows, pick, table_lines
    from postdesk.tickets.render import screen

    fmt = output_format(output, as_json)
    fields = pick(_model_fields(), columns, MODEL_COLUMNS[:-1] if fmt == "table" else None)
    store = _store(obj)
    active = set(store.active_versions().values())
    rows = []
    for version in store.versions():
        meta = store.metadata(version)
        rows.append(
            {
                "version": version,
                "target": meta.get("target"),
                "active": version in active,
                "created_at": meta.get("created_at"),
                "rows": meta.get("data", {}).get("rows"),
                "cv_macro_f1": meta.get("cv", {}).get("macro_f1"),
                "cv_coverage": meta.get("cv", {}).get("coverage"),
                "threshold": meta.get("threshold"),
                "recipe": meta.get("recipe"),
            }
        )
    if fmt == "json":
        print_json(rows if columns is None else json_rows(rows, fields))
        return
    if fmt in ("csv", "tsv"):
        click.echo(delimited(rows, fields, "," if fmt == "csv" else "\t"), nl=False)
        return
    if not rows:
        click.echo(f"no models in {store.root} (train one with `postdesk model train`)")
        return
    for line in table_lines(rows, fields, screen(UTC, utcnow())):
        click.echo(line)


@model.command()
@click.argument("model_ref", metavar="MODEL")
@json_option
@pass_context
def show(obj: Context, model_ref: str, as_json: bool) -> None:
    """Show a model's metrics, training data, settings and library versions.

    \b
    Example:
      $ postdesk model show category-3
    """
    from postdesk.classify.store import load_model_file

    if _looks_like_path(model_ref):
        meta = load_model_file(model_ref).metadata
    else:
        store = _store(obj)
        meta = store.metadata(store.resolve(model_ref))
    if as_json:
        print_json(meta)
        return
    data = meta.get("data", {})
    click.echo(f"model {meta.get('version') or model_ref}: {meta.get('target')}")
    click.echo(f"created  {meta.get('created_at')} in {meta.get('training_seconds')}s")
    click.echo(f"recipe   {json.dumps(meta.get('recipe'))}")
    click.echo(f"data     {data.get('rows')} tickets from {json.dumps(data.get('source'))}")
    click.echo(f"classes  {json.dumps(data.get('classes'), ensure_ascii=False)}")
    if data.get("left_out_classes"):
        click.echo(
            f"left out {json.dumps(data['left_out_classes'], ensure_ascii=False)} (too rare)"
        )
    click.echo(f"metrics  {_cv_line(meta)}")
    click.echo(f"versions {json.dumps(meta.get('versions'))}")


@model.command()
@click.argument("version")
@pass_context
def promote(obj: Context, version: str) -> None:
    """Make VERSION the active model of its target.

    \b
    Example:
      $ postdesk model promote category-3
    """
    before = _store(obj).promote(version)
    if before == version:
        click.echo(f"{version} is already active")
    else:
        click.echo(f"{version} is now active" + (f" (was {before})" if before else ""))


@model.command()
@click.argument("target")
@pass_context
def rollback(obj: Context, target: str) -> None:
    """Make the previously active model of TARGET active again.

    \b
    Example:
      $ postdesk model rollback category
    """
    current, previous = _store(obj).rollback(target)
    click.echo(f"{previous} is active again (was {current})")


@model.command()
@click.argument("number", type=TICKET_NUMBER)
@click.option("--category", metavar="NAME", help="Set the category.")
@click.option("--priority", metavar="NAME", help="Set the priority.")
@click.option("--confirm", is_flag=True, help="Confirm the current category and priority.")
@click.option("--new-category", is_flag=True, help="The --category is a new one (not yet known).")
@click.option("--as", "actor", metavar="EMAIL", help="Who is labelling (an email address).")
@pass_context
def label(
    obj: Context,
    number: int,
    category: str | None,
    priority: str | None,
    confirm: bool,
    new_category: bool,
    actor: str | None,
) -> None:
    """Set or confirm ticket NUMBER's category/priority: training data for the next model.

    A category must be known ([triage] categories, the active model's, or one people
    already gave) unless --new-category; a priority one of [triage] priority_levels. A
    merged ticket is refused: label the ticket it was merged into.

    \b
    Example:
      $ postdesk model label 42 --category billing
      $ postdesk model label 42 --confirm
    """
    from postdesk.classify.labels import (
        check_label,
        check_labeller,
        check_not_merged,
        record_label,
    )
    from postdesk.tickets.views import current_labels

    if not (category or priority or confirm):
        raise PostdeskError("give --category, --priority or --confirm")
    if new_category and not category:
        raise PostdeskError("--new-category goes with --category NAME")
    actor = check_labeller(actor) if actor is not None else "cli"
    settings = obj.settings()
    with obj.database().transaction() as session:
        conn = session.connection()
        current = current_labels(conn, number)
        check_not_merged(conn, number)
        if category is not None:
            category = check_label(
                conn, settings, number, "category", category, new_category=new_category
            )
        if priority is not None:
            priority = check_label(conn, settings, number, "priority", priority)
        changes = {"category": category, "priority": priority}
        if confirm:
            for target in changes:
                if changes[target] is None:
                    changes[target] = current[target]
        done = []
        for target, value in changes.items():
            if value is None:
                continue
            record_label(conn, number, target, value.strip(), actor=actor)
            done.append(f"{target} {value.strip()}")
    if not done:
        raise ModelError(f"ticket #{number} has no category or priority to confirm")
    click.echo(f"ticket #{number}: {', '.join(done)} (recorded as set by {actor})")

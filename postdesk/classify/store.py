"""Where trained models live: `data_dir/models/`, one file per version, and which is active.

A model file is a skops file holding the fitted pipeline and its metadata (as JSON text).
skops, unlike pickle, rebuilds objects from a description and refuses types it was not
told to trust, so loading a model file cannot run code hidden in it. postdesk trusts
exactly the few types its own pipelines need beyond scikit-learn's defaults, and nothing
else.

Versions are named `<target>-<n>` (category-1, category-2, priority-1...). Next to each
`<version>.skops` is `<version>.json`, a copy of the metadata for listing without loading.
`active.json` holds, per target, the versions in the order they were made active; the
last one is active, and a rollback steps back to the one before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from postdesk.classify.errors import ModelError
from postdesk.files import private_directory, private_file, write_atomically

if TYPE_CHECKING:
    from postdesk.classify.training import TrainedModel

# skops and scikit-learn are imported by the functions that read and write model files
# only: listing the store and asking which model is active (what `postdesk run` does on
# every pass) must not cost the second their import takes.

MODELS_DIR = "models"
STATE_FILE = "active.json"
SUFFIX = ".skops"
TRUSTED_TYPES = (
    "postdesk.classify.text.prepare_text",
    "postdesk.classify.text.join_subject_body",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._TemperatureScaling",
)
_TARGET = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_VERSION = re.compile(r"^([a-z][a-z0-9_]{0,39})-([0-9]{1,9})$")


def _split(version: str) -> tuple[str, int]:
    match = _VERSION.match(version)
    if match is None:
        raise ModelError(f"{version!r} is not a model version (e.g. category-3)")
    return match.group(1), int(match.group(2))


def check_target(target: str) -> str:
    """`target` if it is a valid target name (lower-case letters, digits, underscores)."""
    if not _TARGET.match(target):
        raise ModelError(
            f"{target!r} is not a target name; use lower-case letters, digits and _ "
            "(e.g. category, priority)"
        )
    return target


def save_model_file(model: TrainedModel, path: str | Path) -> Path:
    """Write `model` (pipeline and metadata) to a skops file at `path`."""
    import skops.io as sio  # type: ignore[import-untyped]

    from postdesk.classify.training import FORMAT

    p = Path(path)
    payload = {"format": FORMAT, "metadata": json.dumps(model.metadata), "pipeline": model.pipeline}
    try:
        private_directory(p.parent)
        write_atomically(p, sio.dumps(payload, compression=zipfile.ZIP_DEFLATED))
    except OSError as exc:
        raise ModelError(f"cannot write model file {p}: {exc.strerror or exc}") from None
    return p


def load_model_file(path: str | Path) -> TrainedModel:
    """Read a model file written by `save_model_file`, trusting only known types."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline  # type: ignore[import-untyped]

    from postdesk.classify.training import FORMAT, TrainedModel

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"no model file {p}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {p}: {exc.strerror or exc}") from None
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors on a file it cannot parse
        raise ModelError(f"{p} is not a postdesk model file ({type(exc).__name__})") from None
    unknown = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unknown:
        raise ModelError(
            f"{p} contains types postdesk does not trust, refusing to load it: "
            + ", ".join(unknown[:5])
        )
    try:
        payload = sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise ModelError(f"cannot load model file {p}: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{p} is not a postdesk model file of format {FORMAT}")
    pipeline = payload.get("pipeline")
    if not isinstance(pipeline, Pipeline):
        raise ModelError(f"{p} holds no scikit-learn pipeline")
    try:
        metadata = json.loads(payload["metadata"])
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{p} has no readable metadata") from None
    return TrainedModel(pipeline, metadata)


class ModelStore:
    """The models under `data_dir/models/`: versions, the active one per target, history."""

    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / MODELS_DIR

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # --- files --------------------------------------------------------------------------

    def model_path(self, version: str) -> Path:
        return self.root / f"{version}{SUFFIX}"

    def _meta_path(self, version: str) -> Path:
        return self.root / f"{version}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # One writer at a time (a `model train` next to a `postdesk run` retraining).
        try:
            private_directory(self.root)
            private_file(self.root / ".lock")
            handle = (self.root / ".lock").open("a")
        except OSError as exc:
            raise ModelError(f"cannot use model store {self.root}: {exc.strerror or exc}") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, list[str]]:
        path = self.root / STATE_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelError(f"{path} is not a model store state file")
        return {str(k): [str(v) for v in vs] for k, vs in raw.items() if isinstance(vs, list)}

    def _write_state(self, state: dict[str, list[str]]) -> None:
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        write_atomically(self.root / STATE_FILE, text.encode("utf-8"))

    # --- versions -----------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Every stored version, by target then number."""
        if not self.root.is_dir():
            return []
        found: list[tuple[str, int, str]] = []
        for path in self.root.glob(f"*{SUFFIX}"):
            match = _VERSION.match(path.stem)
            if match:
                found.append((match.group(1), int(match.group(2)), path.stem))
        return [name for _, _, name in sorted(found)]

    def add(self, model: TrainedModel) -> str:
        """Store `model` as the next version of its target (not yet active); its name."""
        target = check_target(model.target)
        with self._locked():
            numbers = [_split(v)[1] for v in self.versions() if _split(v)[0] == target]
            version = f"{target}-{max(numbers, default=0) + 1}"
            model.metadata["version"] = version
            save_model_file(model, self.model_path(version))
            text = json.dumps(model.metadata, indent=2, ensure_ascii=False) + "\n"
            write_atomically(self._meta_path(version), text.encode("utf-8"))
        return version

    def exists(self, version: str) -> bool:
        return self.model_path(version).is_file()

    def _require(self, version: str) -> None:
        if not _VERSION.match(version) or not self.exists(version):
            known = ", ".join(self.versions()) or "none"
            raise ModelError(f"no model {version!r} in {self.root} (known: {known})")

    def metadata(self, version: str) -> dict[str, Any]:
        """The metadata of `version`, read from its JSON copy (no model loading)."""
        self._require(version)
        try:
            data = json.loads(self._meta_path(version).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            # The JSON copy is a convenience; the model file has the original.
            return self.load(version).metadata
        if not isinstance(data, dict):
            raise ModelError(f"{self._meta_path(version)} is not model metadata")
        return data

    def load(self, version: str) -> TrainedModel:
        self._require(version)
        model = load_model_file(self.model_path(version))
        model.metadata["version"] = version
        return model

    # --- which one is active ------------------------------------------------------------

    def active(self, target: str) -> str | None:
        history = self._read_state().get(target, [])
        return history[-1] if history else None

    def active_versions(self) -> dict[str, str]:
        """The active version of every target that has one."""
        return {t: h[-1] for t, h in sorted(self._read_state().items()) if h}

    def history(self, target: str) -> list[str]:
        """Versions of `target` in the order they were made active (last = active)."""
        return list(self._read_state().get(target, []))

    def promote(self, version: str) -> str | None:
        """Make `version` the active model of its target; returns the one it replaces."""
        self._require(version)
        target = _split(version)[0]
        with self._locked():
            state = self._read_state()
            history = state.setdefault(target, [])
            before = history[-1] if history else None
            if before != version:
                history.append(version)
                self._write_state(state)
        return before

    def rollback(self, target: str) -> tuple[str, str]:
        """Make the previously active model of `target` active again: (from, to)."""
        check_target(target)
        with self._locked():
            state = self._read_state()
            history = state.get(target, [])
            if not history:
                raise ModelError(f"no {target} model has been active; nothing to roll back")
            if len(history) < 2:
                raise ModelError(
                    f"{history[-1]} is the only {target} model ever made active; "
                    "there is none to roll back to"
                )
            current = history.pop()
            while history and not self.exists(history[-1]):
                history.pop()  # a version deleted by hand cannot be restored
            if not history:
                raise ModelError(f"the {target} models active before {current} are gone")
            self._write_state(state)
            return current, history[-1]

    def resolve(self, ref: str) -> str:
        """A version from what a person typed: a version, or a target (its active one)."""
        if _VERSION.match(ref):
            self._require(ref)
            return ref
        if _TARGET.match(ref):
            active = self.active(ref)
            if active is None:
                raise ModelError(f"no active {ref} model (train one, or name a version)")
            return active
        raise ModelError(f"{ref!r} is neither a model version (category-3) nor a target")

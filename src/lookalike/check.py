"""`lookalike check`: verify a collection and repair what can be repaired.

A check is a small object with a `name`, `verify(collection) -> findings` and
`repair(collection, findings)`; `CHECKS` holds them in the order they run (the SQLite file
first, derived files last, since every repair before them changes the catalog they derive
from). A module that adds derived files to a collection (an ANN index, say) adds its own
check with `register_check`, and `lookalike check` covers it from then on.

Repairs never invent data: signatures are re-extracted from the image's own source through
the collection's describe path, full-text rows are recomputed from keywords and metadata, and
what cannot be restored (an upload whose stored file is gone) is dropped and said so. After
repairing, every check runs again: the report's `remaining` is what is still wrong.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.api import Collection

UPLOAD_GRACE_S = 60.0  # a newer unreferenced upload may belong to an add still in progress
CHUNK = 2000  # images per signature read: a check never loads every vector at once


@dataclass
class Finding:
    """One problem: which check saw it, on what, and what repair did about it (if run)."""

    check: str
    subject: str  # "image 12", "uploads/ab12.jpg", "catalog.sqlite", a settings key
    problem: str
    image_id: int | None = None
    action: str | None = None  # what repair did, or why it could not
    repaired: bool = False


@dataclass
class CheckReport:
    """What was found, what was done, and what is still wrong afterwards."""

    found: list[Finding] = field(default_factory=list)
    remaining: list[Finding] = field(default_factory=list)
    repaired: bool = False  # whether repair was asked for
    checks: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "repair": self.repaired,
            "checks": self.checks,
            "found": [asdict(f) for f in self.found],
            "remaining": [asdict(f) for f in self.remaining],
        }


class Check(Protocol):
    name: str

    def verify(self, coll: Collection) -> list[Finding]: ...

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        """Try to fix `findings` (this check's own), setting each one's action/repaired."""


CHECKS: list[Check] = []


def register_check(check: Check) -> Check:
    """Add a check (replacing one of the same name); derived-file checks run last."""
    CHECKS[:] = [c for c in CHECKS if c.name != check.name]
    CHECKS.append(check)
    return check


def run_checks(
    coll: Collection,
    *,
    repair: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> CheckReport:
    """Verify every registered check; with `repair`, fix what each found, then verify again.
    `progress(check, done, total)` as each check starts (at 1M images the catalog's own
    integrity check and the signatures' take minutes). Reads run without the statement
    budget meant for searches: a check must read everything."""

    def step(name: str, done: int) -> None:
        if progress is not None:
            progress(name, done, len(CHECKS))

    report = CheckReport(repaired=repair, checks=[c.name for c in CHECKS])
    with coll.catalog.unbudgeted():
        for done, check in enumerate(CHECKS):
            step(check.name, done)
            findings = _verify(check, coll)
            report.found.extend(findings)
            if repair and findings:
                try:
                    check.repair(coll, findings)
                except sqlite3.DatabaseError as exc:
                    for finding in findings:
                        if finding.action is None:
                            _fix(finding, f"repair failed: {exc}", repaired=False)
        if repair:
            for done, check in enumerate(CHECKS):
                step(f"{check.name} again", done)
                report.remaining.extend(_verify(check, coll))
        else:
            report.remaining = list(report.found)
    step("done", len(CHECKS))
    return report


def _verify(check: Check, coll: Collection) -> list[Finding]:
    """A check's findings; a catalog too damaged to read is a finding too, not a crash."""
    try:
        return check.verify(coll)
    except sqlite3.DatabaseError as exc:
        return [Finding(check.name, "catalog.sqlite", f"could not be read: {exc}")]


def _fix(finding: Finding, action: str, repaired: bool = True) -> None:
    finding.action, finding.repaired = action, repaired


# -- the catalog file -----------------------------------------------------------------------


class SqliteCheck:
    """PRAGMA integrity_check and foreign_key_check. Index pages can be rebuilt (REINDEX) and
    rows of deleted images dropped; damaged table pages cannot: restore a backup."""

    name = "sqlite"

    def verify(self, coll: Collection) -> list[Finding]:
        return [
            Finding(self.name, "catalog.sqlite", problem)
            for problem in coll.catalog.integrity_problems()
        ]

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        try:
            coll.catalog.reindex_and_drop_dangling()
        except Exception as exc:  # a damaged table page: SQLite refuses to touch it
            for finding in findings:
                _fix(finding, f"could not rebuild: {exc}; restore a backup", repaired=False)
            return
        sound = not coll.catalog.integrity_problems()
        for finding in findings:
            if sound:
                _fix(finding, "indexes rebuilt, dangling rows dropped")
            else:
                _fix(finding, "still damaged after REINDEX: restore a backup", repaired=False)


# -- settings -----------------------------------------------------------------------------------


def _settings_defaults(coll: Collection) -> dict[str, Callable[[], Any]]:
    """Settings that have a safe default (the others decided what the signatures mean)."""
    from lookalike import api, ingest
    from lookalike.decode import DEFAULT_MAX_PIXELS
    from lookalike.scoring import default_weights_for

    return {
        "default_weights": lambda: default_weights_for(
            coll.attributes, {**api.DEFAULT_WEIGHTS, "deep": api.DEEP_DEFAULT_WEIGHT}
        ),
        "max_pixels": lambda: DEFAULT_MAX_PIXELS,
        "tag_floor": lambda: ingest.TAG_FLOOR,
    }


class SettingsCheck:
    """The collection's settings in the meta table: present and usable."""

    name = "settings"

    def verify(self, coll: Collection) -> list[Finding]:
        from lookalike.decode import Preprocess
        from lookalike.scoring import normalise_weights

        meta = coll.catalog.get_meta
        problems: dict[str, str] = {}
        attributes = meta("attributes")
        if not isinstance(attributes, dict) or not attributes:
            problems["attributes"] = "missing or empty: the collection extracts nothing"
        preprocess = meta("preprocess")
        try:
            if not isinstance(preprocess, dict):
                raise ValueError("missing")
            Preprocess.from_dict(preprocess)
        except (LookalikeError, ValueError, TypeError) as exc:
            problems["preprocess"] = f"unusable ({exc}): queries would be prepared differently"
        weights = meta("default_weights")
        try:
            if not isinstance(weights, dict):
                raise ValueError("missing")
            normalise_weights(weights, coll.attributes, {})
        except (LookalikeError, ValueError, TypeError) as exc:
            problems["default_weights"] = f"unusable ({exc})"
        pixels = meta("max_pixels")
        if not isinstance(pixels, int) or isinstance(pixels, bool) or pixels <= 0:
            problems["max_pixels"] = f"not a positive integer ({pixels!r})"
        floor = meta("tag_floor")
        if not isinstance(floor, int | float) or not 0.0 <= float(floor) <= 1.0:
            problems["tag_floor"] = f"not a probability ({floor!r})"
        return [Finding(self.name, key, problem) for key, problem in problems.items()]

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        defaults = _settings_defaults(coll)
        for finding in findings:
            if finding.subject in defaults:
                value = defaults[finding.subject]()
                coll.catalog.set_meta(finding.subject, value)
                _fix(finding, f"set to the default {json.dumps(value)}")
            else:
                _fix(finding, "no safe default: the stored signatures depend on it", False)


# -- uploads ------------------------------------------------------------------------------------


class UploadsCheck:
    """Every image stored as an upload has its file under uploads/; no file there is orphaned."""

    name = "uploads"

    def verify(self, coll: Collection) -> list[Finding]:
        from lookalike.api import UPLOADS

        folder = (coll.directory / UPLOADS).resolve()
        images = coll.catalog.upload_images()
        findings = [
            Finding(self.name, f"image {image_id}", f"stored upload {path} is gone", image_id)
            for image_id, path in images
            if Path(path).parent == folder and not Path(path).is_file()
        ]
        # by name, wherever the uploads folder was: a moved collection's files are not orphans
        referenced = {Path(path).name for _, path in images}
        if folder.is_dir():
            findings += [
                Finding(self.name, f"{UPLOADS}/{file.name}", "file of no image (orphan)")
                for file in sorted(folder.iterdir())
                if file.name not in referenced
            ]
        return findings

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        for finding in findings:
            if finding.image_id is not None:
                coll.catalog.delete([finding.image_id])
                _fix(finding, "image dropped: its original is lost (add it again to restore it)")
                continue
            file = coll.directory / finding.subject
            if time.time() - file.stat().st_mtime < UPLOAD_GRACE_S:
                _fix(finding, "left: written under a minute ago (an add may be running)", False)
            else:
                file.unlink(missing_ok=True)
                _fix(finding, "orphan deleted")


# -- signatures ---------------------------------------------------------------------------------


class SignaturesCheck:
    """Every image has, for each attribute of the collection, a signature of the current
    extractor version, of the right length (dim float32) and with finite values only."""

    name = "signatures"

    def verify(self, coll: Collection) -> list[Finding]:
        expected = {name: (ex.version, ex.dim) for name, ex in coll.extractors.items()}
        findings: list[Finding] = []
        after = 0
        while images := coll.catalog.image_ids_after(after, CHUNK):
            stored: dict[int, dict[str, tuple[str, bytes]]] = {i: {} for i, _, _ in images}
            for image_id, attribute, version, blob in coll.catalog.signature_facts(after, CHUNK):
                stored[image_id][attribute] = (version, blob)
            for image_id, _path, origin in images:
                problems = _signature_problems(stored[image_id], expected)
                if problems:
                    kind = " (imported)" if origin == "imported" else ""
                    findings.append(
                        Finding(self.name, f"image {image_id}{kind}", "; ".join(problems), image_id)
                    )
            after = images[-1][0]
        return findings

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        for finding in findings:
            assert finding.image_id is not None
            record = coll.catalog.get(finding.image_id)
            if record is None:
                _fix(finding, "image already removed")
                continue
            if coll.catalog.origin_of(record.id) == "imported":
                _fix(finding, "imported vectors have no pixels to re-extract: import again", False)
                continue
            try:
                coll.update(record.id)  # re-read its own source: the collection's describe path
            except (LookalikeError, OSError) as exc:
                _fix(finding, f"cannot re-extract ({exc}); remove it or restore the file", False)
            else:
                _fix(finding, f"re-extracted from {record.path}")


def _signature_problems(
    stored: dict[str, tuple[str, bytes]], expected: dict[str, tuple[str, int]]
) -> list[str]:
    problems = []
    for name, (version, dim) in expected.items():
        if name not in stored:
            problems.append(f"{name}: missing")
            continue
        have_version, blob = stored[name]
        if have_version != version:
            problems.append(f"{name}: version {have_version} is stale (current {version})")
        elif len(blob) != 4 * dim:
            problems.append(f"{name}: {len(blob)} bytes, expected {4 * dim} ({dim} float32)")
        elif not np.isfinite(np.frombuffer(blob, dtype="<f4")).all():
            problems.append(f"{name}: non-finite values")
    return problems


# -- full text ------------------------------------------------------------------------------


class FullTextCheck:
    """The FTS5 rows hold exactly each image's keywords and metadata strings."""

    name = "fulltext"

    def verify(self, coll: Collection) -> list[Finding]:
        wrong, extra, sound = coll.catalog.search_text_problems()
        findings = [
            Finding(self.name, f"image {image_id}", "full-text row missing or stale", image_id)
            for image_id in sorted(wrong)
        ]
        findings += [
            Finding(self.name, f"row {rowid}", "full-text row of no image") for rowid in extra
        ]
        if not sound:
            findings.append(Finding(self.name, "search_text", "FTS5 integrity-check failed"))
        return findings

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        wrong, extra, _ = coll.catalog.search_text_problems()
        coll.catalog.rewrite_search_text(wrong, extra)
        for finding in findings:
            _fix(finding, "rebuilt from keywords and metadata")


# -- metadata index -------------------------------------------------------------------------


class MetadataIndexCheck:
    """The metadata index that filters read (`meta_values`) holds exactly what each image's
    metadata gives: a stale row would let a filter admit or drop the wrong image."""

    name = "metadata-index"

    def verify(self, coll: Collection) -> list[Finding]:
        existing = {i for (i,) in coll.catalog.query("SELECT id FROM images")}
        return [
            Finding(
                self.name,
                f"image {image_id}",
                "metadata index rows missing or stale"
                if image_id in existing
                else "metadata index rows of no image",
                image_id,
            )
            for image_id in coll.catalog.meta_index_problems()
        ]

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        coll.catalog.rewrite_meta_index(f.image_id for f in findings if f.image_id is not None)
        for finding in findings:
            _fix(finding, "rebuilt from the image's metadata")


for _check in (
    SqliteCheck(),
    SettingsCheck(),
    UploadsCheck(),
    SignaturesCheck(),
    FullTextCheck(),
    MetadataIndexCheck(),
):
    register_check(_check)

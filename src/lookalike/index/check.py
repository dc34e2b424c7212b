"""`lookalike check` covers the index files: any that would not load (missing state, another
version or settings, corrupt or truncated files, ids not matching their checksum) is a
finding, and repair rebuilds it from the catalog, which stays the truth."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookalike.check import Finding, register_check

if TYPE_CHECKING:
    from lookalike.api import Collection


class IndexFilesCheck:
    name = "indexes"

    def verify(self, coll: Collection) -> list[Finding]:
        return [
            Finding(self.name, f"indexes/{attribute}", problem)
            for attribute, problem in coll.verify_indexes().items()
        ]

    def repair(self, coll: Collection, findings: list[Finding]) -> None:
        coll.rebuild_indexes([f.subject.removeprefix("indexes/") for f in findings])
        for finding in findings:
            finding.action, finding.repaired = "rebuilt from the catalog", True


register_check(IndexFilesCheck())

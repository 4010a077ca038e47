"""The documents the code cites exist in the repository: no docstring, comment or message under
mpidecent/ points at the developers' ``specs/`` notes (which users do not have), and every
``docs/…md`` path it names is a file of the repository, so a renamed or moved page cannot leave a
dead citation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mpidecent"

# "specs/" at the start of a path (not the tail of another name such as "my_specs/").
SPECS = re.compile(r"(?<![\w./-])specs/")
# A cited page: docs/ and a path ending in .md (an #anchor after it is not part of the path).
DOCS = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")


def _package_texts() -> list[tuple[Path, str]]:
    """(path, text) of every text file of the package (sources and any data files beside them)."""
    texts = []
    for path in sorted(PACKAGE.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            texts.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # a binary file cites nothing
    return texts


def _citations(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """("file:line", match) of every match of ``pattern`` in the package."""
    found = []
    for path, text in _package_texts():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group(0)))
    return found


def test_the_package_texts_are_found():
    texts = dict(_package_texts())
    assert PACKAGE / "algorithms" / "catalog.py" in texts and len(texts) > 50


def test_no_file_of_the_package_cites_the_specs_notes():
    cited = _citations(SPECS)
    assert not cited, "cite docs/algorithms/<page>.md instead of specs/: " + ", ".join(
        where for where, _ in cited
    )


def test_every_cited_docs_page_exists():
    cited = _citations(DOCS)
    # the pattern finds the citations the package has
    assert any(page.startswith("docs/algorithms/") for _, page in cited)
    missing = [f"{where}: {page}" for where, page in cited if not (ROOT / page).is_file()]
    assert not missing, "cited pages that do not exist: " + ", ".join(missing)


def test_the_patterns_tell_citations_from_other_names():
    assert SPECS.search("see ``specs/baselines.md``") and SPECS.search("(specs/x.md)")
    assert not SPECS.search("algorithm_specs/x") and not SPECS.search("the specs of docs")
    assert DOCS.findall("``docs/algorithms/push-sum.md#wire``, docs/job-file.md") == [
        "docs/algorithms/push-sum.md",
        "docs/job-file.md",
    ]
    assert not DOCS.search("mydocs/x.md") and not DOCS.search("the docs/ folder")

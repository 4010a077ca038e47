"""Every relative link in README.md and docs/**/*.md leads somewhere: the file (or folder) exists,
relative to the linking file, and a `#anchor` names a heading of the target (GitHub's slug) or an
`<a id>` / `<a name>` in it. Links inside code blocks and code spans are not links and are skipped;
http(s), mailto and other absolute URLs are skipped. Every page under docs/ is reachable from the
README by following links. The checker itself is tested on a small tree with dead links first."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(
    r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]"  # [text], one level of nested brackets allowed
    r"\(\s*(<[^>]*>|[^\s()]+(?:\([^\s()]*\)[^\s()]*)*)",  # (target, balanced parentheses inside
)
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HREF = re.compile(r"<a\s[^>]*?href\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
ATX_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True)
class DeadLink:
    """One link that leads nowhere: the linking file, its 1-based line, the target and why."""

    file: Path
    line: int
    target: str
    reason: str

    def describe(self, root: Path) -> str:
        return f"{self.file.relative_to(root)}:{self.line}: ({self.target}) {self.reason}"


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line with code spans blanked) for every line outside fenced code."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opener = FENCE.match(line)
        if fence is None and opener:
            fence = opener.group(1)[0] * len(opener.group(1))
            continue
        if fence is not None:
            if line.lstrip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        out.append((number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text lowercased, punctuation and symbols
    dropped (hyphens and underscores kept), each space a hyphen."""
    parts = re.split(r"(`+[^`]*`+)", heading)  # odd parts: code spans, shown literally
    for i, part in enumerate(parts):
        if i % 2:
            parts[i] = part.strip("`")
        else:
            part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)  # a link renders as its text
            parts[i] = re.sub(r"<[^>]+>", "", part)  # inline HTML renders as nothing
    text = "".join(parts)
    kept = []
    for char in text.lower():
        category = unicodedata.category(char)
        if char in "-_" or char == " " or category[0] in "LNM":
            kept.append(char)
    return "".join(kept).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """Every anchor a markdown file offers: heading slugs (repeats get -1, -2, ...) and HTML ids."""
    text = path.read_text(encoding="utf-8")
    seen: Counter[str] = Counter()
    anchors: set[str] = set()
    for _, line in prose_lines(text):
        heading = ATX_HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(1))
            anchors.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
            seen[slug] += 1
        anchors.update(HTML_ANCHOR.findall(line))
    return anchors


def links_of(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link, image, reference definition and <a href> in a file."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        targets = [m.group(2) for m in INLINE_LINK.finditer(line)]
        targets += [m.group(1) for m in REFERENCE_DEF.finditer(line)]
        targets += HREF.findall(line)
        found += [(number, t[1:-1] if t.startswith("<") else t) for t in targets]
    return found


def dead_links(files: list[Path]) -> list[DeadLink]:
    """Every relative link in `files` whose file is missing or whose anchor no heading makes."""
    dead: list[DeadLink] = []
    for path in files:
        for line, target in links_of(path):
            if SCHEME.match(target) or target.startswith("//"):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / unquote(file_part)).resolve() if file_part else path
            if not linked.exists():
                dead.append(DeadLink(path, line, target, "no such file"))
            elif anchor and linked.suffix == ".md" and unquote(anchor) not in anchors_of(linked):
                dead.append(DeadLink(path, line, target, f"no heading #{anchor} in {linked.name}"))
    return dead


def reachable_pages(start: Path) -> set[Path]:
    """Markdown files reachable from `start` by following relative links."""
    seen = {start.resolve()}
    todo = [start.resolve()]
    while todo:
        page = todo.pop()
        for _, target in links_of(page):
            file_part = target.partition("#")[0]
            if not file_part or SCHEME.match(target):
                continue
            linked = (page.parent / unquote(file_part)).resolve()
            if linked.suffix == ".md" and linked.is_file() and linked not in seen:
                seen.add(linked)
                todo.append(linked)
    return seen


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def report(dead: list[DeadLink], root: Path) -> str:
    return f"{len(dead)} dead link(s):\n" + "\n".join(d.describe(root) for d in dead)


def test_github_slug():
    assert github_slug("Checkpoints, resume and preemption") == "checkpoints-resume-and-preemption"
    assert github_slug("10. Local steps on a slow link") == "10-local-steps-on-a-slow-link"
    assert github_slug("`/metrics/rank/<name>` — (L, n)") == "metricsrankname--l-n"
    assert github_slug("[run] eval_every") == "run-eval_every"
    assert github_slug("Goal: ≤ 1.15× raw") == "goal--115-raw"
    assert github_slug("See [the format](x.md) here") == "see-the-format-here"


def test_checker_reports_every_dead_link(tmp_path):
    """A tree with one dead link of each kind: the checker names each with its file and line,
    and passes the live ones, the ones in code and the absolute URLs."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        '# Page\n\n## Same\n\n## Same\n\n<a id="custom"></a>\n'
        "Back to [the readme](../README.md#tour) and [gone](../nothere.md).\n",
        encoding="utf-8",
    )
    (tmp_path / "README.md").write_text(
        "# Title\n\n## Tour\n\n"
        "[ok](docs/page.md) [ok2](docs/page.md#same-1) [ok3](docs/page.md#custom) [dir](jobs/)\n"
        "[missing](docs/missing.md) [bad anchor](docs/page.md#nope)\n"
        "[self](#tour) [self bad](#tours) ![img](docs/fig.png)\n"
        "`[in code](docs/none.md)` [web](https://example.com/x.md) [mail](mailto:a@b.c)\n"
        "```\n[in a fence](docs/none.md)\n```\n"
        '<a href="docs/gone.md">html</a>\n'
        "[ref]: docs/also-gone.md\n",
        encoding="utf-8",
    )
    dead = dead_links(doc_files(tmp_path))
    described = sorted(d.describe(tmp_path) for d in dead)
    assert described == [
        "README.md:12: (docs/gone.md) no such file",
        "README.md:13: (docs/also-gone.md) no such file",
        "README.md:6: (docs/missing.md) no such file",
        "README.md:6: (docs/page.md#nope) no heading #nope in page.md",
        "README.md:7: (#tours) no heading #tours in README.md",
        "README.md:7: (docs/fig.png) no such file",
        "docs/page.md:8: (../nothere.md) no such file",
    ]
    assert report(dead, tmp_path).startswith("7 dead link(s):\nREADME.md:6: (docs/missing.md)")
    assert reachable_pages(tmp_path / "README.md") == {
        (tmp_path / "README.md").resolve(),
        (tmp_path / "docs" / "page.md").resolve(),
    }


def test_no_dead_links_in_readme_and_docs():
    dead = dead_links(doc_files(ROOT))
    assert not dead, report(dead, ROOT)


def test_every_docs_page_reachable_from_readme():
    """No orphan page: each docs/**/*.md can be reached from the README by following links."""
    reachable = reachable_pages(ROOT / "README.md")
    orphans = [p.relative_to(ROOT) for p in doc_files(ROOT) if p.resolve() not in reachable]
    assert not orphans, f"pages no link from README.md leads to: {[str(p) for p in orphans]}"

"""Every relative link and image in the repository's Markdown files points at
a file (or folder) of the repository, and at a heading that exists when it
names one (#anchor, GitHub's slugs). Nothing links out of the repository by
a relative path (a sibling folder such as ../reference/... works in one checkout and nowhere else)."""

from __future__ import annotations

import pathlib
import re
import subprocess
from collections.abc import Iterable
from urllib.parse import unquote

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of [...]
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]*)\"", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def repository_files() -> set[str]:
    """Paths (relative, POSIX) of the files git tracks, plus new ones it does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return {p for p in out.split("\0") if p and (ROOT / p).exists()}


def _outside_fences(text: str) -> Iterable[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
        elif fence is None:
            yield number, line


def _prose_lines(text: str) -> Iterable[tuple[int, str]]:
    """Lines outside code blocks, code spans blanked (a link in code is not a link)."""
    for number, line in _outside_fences(text):
        yield number, _CODE_SPAN.sub(lambda c: "x" * len(c.group(0)), line)


def _strip_code_spans(line: str) -> str:
    # keep the text of a code span (a heading's slug uses it), drop its backticks
    return _CODE_SPAN.sub(lambda c: c.group(0).strip("`"), line)


def heading_slugs(text: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text: lower case, the
    rendered text only, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _outside_fences(text):
        h = _HEADING.match(line)
        if not h:
            continue
        title = _strip_code_spans(h.group(2))
        title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
        title = re.sub(r"<[^>]+>", "", title)
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def link_targets(text: str) -> Iterable[tuple[int, str]]:
    for number, line in _prose_lines(text):
        for pattern in (_INLINE, _REFERENCE, _HTML):
            for m in pattern.finditer(line):
                yield number, m.group(1).strip("<>")


def _has_heading(md: pathlib.Path, anchor: str) -> bool:
    return anchor.lower() in heading_slugs(md.read_text(encoding="utf-8"))


def link_problems(md: pathlib.Path, root: pathlib.Path, files: set[str]) -> list[str]:
    """What is wrong with the relative links of one Markdown file: each as
    'path:line: target: problem'."""
    text = md.read_text(encoding="utf-8")
    where = md.relative_to(root).as_posix()
    folders = {str(p) for f in files for p in pathlib.PurePosixPath(f).parents}
    problems = []
    for number, target in link_targets(text):
        if _SCHEME.match(target):
            continue  # http:, https:, mailto:: not ours to check
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if path_part.startswith("/"):
            problems.append(f"{where}:{number}: {target}: an absolute path; link relative to the file")
            continue
        resolved = (md.parent / path_part).resolve() if path_part else md.resolve()
        try:
            relative = resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            problems.append(f"{where}:{number}: {target}: leaves the repository")
            continue
        if relative not in files and relative not in folders:
            problems.append(f"{where}:{number}: {target}: no such file in the repository")
            continue
        if anchor and relative.endswith(".md") and not _has_heading(root / relative, anchor):
            problems.append(f"{where}:{number}: {target}: no heading #{anchor} in {relative}")
    return problems


# -- the repository's own Markdown ----------------------------------------------------
def test_every_relative_link_in_the_repository_resolves() -> None:
    files = repository_files()
    markdown = sorted(f for f in files if f.endswith(".md"))
    assert "README.md" in markdown and any(f.startswith("docs/") for f in markdown)
    problems = [p for f in markdown for p in link_problems(ROOT / f, ROOT, files)]
    assert not problems, "broken links:\n" + "\n".join(problems)


# -- the checker itself ------------------------------------------------------------------
@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "api.md").write_text("# The API\n\n## `POST /api/rank`\n\n## Errors\n\n## Errors\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("")
    return tmp_path


FILES = {"README.md", "docs/api.md", "pkg/mod.py"}


def _problems(repo: pathlib.Path, text: str) -> list[str]:
    (repo / "README.md").write_text(text)
    return link_problems(repo / "README.md", repo, FILES)


@pytest.mark.parametrize("text", [
    "[api](docs/api.md) and ![code](pkg/mod.py), a [folder](pkg/)",
    "[rank](docs/api.md#post-apirank), [again](docs/api.md#errors-1), [top](#x)\n\n# x",
    "[web](https://example.org/a.md) [mail](mailto:a@b.c)",
    "```\n[not a link](missing.md)\n```\nand `[nor this](missing.md)`",
    "[ref]: docs/api.md",
])
def test_good_links_pass(repo: pathlib.Path, text: str) -> None:
    assert _problems(repo, text) == []


@pytest.mark.parametrize(("text", "problem"), [
    ("[gone](docs/missing.md)", "docs/missing.md: no such file in the repository"),
    ("![gone](docs/missing.png)", "docs/missing.png: no such file in the repository"),
    ("see [schemas](../reference/metric-schemas.md)", "leaves the repository"),
    ("[anchor](docs/api.md#no-such-heading)", "no heading #no-such-heading in docs/api.md"),
    ("[self](#nowhere)", "no heading #nowhere in README.md"),
    ("[root](/docs/api.md)", "an absolute path"),
    ("[ref]: docs/missing.md", "no such file in the repository"),
    ('<img src="docs/missing.png">', "no such file in the repository"),
])
def test_bad_links_are_named(repo: pathlib.Path, text: str, problem: str) -> None:
    problems = _problems(repo, text)
    assert len(problems) == 1 and problem in problems[0], problems
    assert problems[0].startswith("README.md:1: ")

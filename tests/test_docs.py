"""The docs hold together: every file in docs/ is linked from README.md or a docs page, every
relative link resolves, the index lists every page, and every measurement page is dated.

The checks read markdown only (no network, no rendering): inline links and images
``[text](target)`` / ``![alt](target)``, reference definitions ``[name]: target`` and HTML
``src=``/``href=`` attributes, outside fenced code blocks and inline code. Anchors are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_HTML = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def _blank_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked, line numbers kept."""
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return _CODE_SPAN.sub("", text)


def markdown_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in ``text``, outside code."""
    text = _blank_code(text)
    found = []
    for pattern in (_INLINE, _REFERENCE, _HTML):
        for m in pattern.finditer(text):
            found.append((text.count("\n", 0, m.start(1)) + 1, m.group(1)))
    return sorted(found)


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


def _sources(root: Path) -> list[Path]:
    docs = root / "docs"
    pages = sorted(docs.rglob("*.md")) if docs.is_dir() else []
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + pages


def link_targets(page: Path) -> list[tuple[int, str, Path]]:
    """(line, raw target, resolved path) of every relative link of ``page``; anchors dropped."""
    out = []
    for line, target in markdown_links(page.read_text(encoding="utf-8")):
        if _is_external(target):
            continue
        path = unquote(target.split("#", 1)[0].split("?", 1)[0])
        if not path:  # a link to an anchor of the same page
            continue
        out.append((line, target, (page.parent / path).resolve()))
    return out


def check_docs(root: Path) -> tuple[list[str], list[str]]:
    """(orphans, broken links) under ``root``: files in docs/ that README.md or no other docs
    page links to, and relative links of README.md / docs/**/*.md to files that do not exist."""
    root = root.resolve()
    linked: set[Path] = set()
    broken = []
    for page in _sources(root):
        for line, target, path in link_targets(page):
            if not path.exists():
                broken.append(f"{page.relative_to(root)}:{line}: broken link {target!r}")
            elif path != page.resolve():  # a page's link to itself does not count
                linked.add(path)
    docs = root / "docs"
    files = sorted(p for p in docs.rglob("*") if p.is_file()) if docs.is_dir() else []
    orphans = [str(p.relative_to(root)) for p in files if p.resolve() not in linked]
    return orphans, broken


def unindexed_pages(root: Path) -> list[str]:
    """docs/*.md pages that the index, docs/README.md, does not link to."""
    docs = (root / "docs").resolve()
    index = docs / "README.md"
    listed = {path for _, _, path in link_targets(index)} if index.is_file() else set()
    return [
        str(p.relative_to(docs))
        for p in sorted(docs.glob("*.md"))
        if p != index and p.resolve() not in listed
    ]


def undated_measurement_pages(root: Path) -> list[str]:
    """Pages linked from the index's "Measurements" section whose opening (the text before the
    first ``## `` heading) lacks a date (YYYY-MM-DD), the machine or the command."""
    docs = (root / "docs").resolve()
    text = (docs / "README.md").read_text(encoding="utf-8")
    section = text.split("## Measurements", 1)[-1].split("\n## ", 1)[0]
    problems = []
    for _, target in markdown_links(section):
        page = docs / target.split("#", 1)[0]
        head = page.read_text(encoding="utf-8").split("\n## ", 1)[0]
        missing = [
            what
            for what, ok in (
                ("a date", _DATE.search(head)),
                ("the machine", re.search(r"machine", head, re.IGNORECASE)),
                ("the command", re.search(r"command", head, re.IGNORECASE)),
            )
            if not ok
        ]
        if missing:
            problems.append(f"{page.name}: lacks {', '.join(missing)} before its first section")
    return problems


# --------------------------------------------------------------------------- the real tree


def test_every_docs_file_is_linked():
    orphans, _ = check_docs(ROOT)
    assert orphans == [], "link these from README.md or a docs page: " + ", ".join(orphans)


def test_every_relative_link_resolves():
    _, broken = check_docs(ROOT)
    assert broken == []


def test_the_index_lists_every_page():
    assert unindexed_pages(ROOT) == []


def test_every_measurement_page_is_dated_with_machine_and_command():
    assert undated_measurement_pages(ROOT) == []


def test_the_index_lists_measurement_pages():
    # the dated-page check above reads this section; an empty section would pass it vacuously
    section = (ROOT / "docs" / "README.md").read_text().split("## Measurements", 1)[1]
    assert len(markdown_links(section.split("\n## ", 1)[0])) >= 10


# --------------------------------------------------------------------------- controls


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _synthetic_tree(root: Path) -> None:
    _write(
        root / "README.md",
        "# x\n\nSee [the docs](docs/README.md), [a](docs/a.md#section) and\n"
        "[a page that is gone](docs/missing.md).\n\n"
        "![plot](docs/plot.png) [web](https://example.org/none.md)\n",
    )
    _write(
        root / "docs" / "README.md",
        "# index\n\n## Measurements\n\n| [a.md](a.md) | [undated.md](undated.md) |\n\n"
        "## Reference\n\n[back](../README.md), [me](README.md), [anchor](#top)\n"
        '[ref]: a.md\n<img src="pic.png">\n',
    )
    _write(
        root / "docs" / "a.md",
        "# a\n\n- Date: 2026-11-29.\n- Machine: 2 cores.\n"
        "- Command: `x`.\n\n## section\n\n[broken image](missing.png)\n",
    )
    _write(
        root / "docs" / "undated.md",
        "# u\n\nNo date here.\n\n## later 2026-11-29 machine command\n",
    )
    _write(root / "docs" / "plot.png", b"\x89PNG")
    _write(root / "docs" / "pic.png", b"\x89PNG")
    # an orphan page that links only to itself, and an orphan figure
    _write(root / "docs" / "orphan.md", "# o\n\n[me](orphan.md)\n")
    _write(root / "docs" / "orphan.json", "{}")
    # links inside code are not links: neither targets nor breakage
    _write(
        root / "docs" / "code.md",
        "# c\n\n```md\n[gone](nowhere.md)\n```\n\n`[also gone](nowhere2.md)` and "
        "[undated](undated.md)\n",
    )


def test_control_orphans_and_broken_links_are_reported(tmp_path):
    _synthetic_tree(tmp_path)
    orphans, broken = check_docs(tmp_path)
    # code.md is linked by nothing either: the index does not list it
    assert orphans == ["docs/code.md", "docs/orphan.json", "docs/orphan.md"]
    assert broken == [
        "README.md:4: broken link 'docs/missing.md'",
        "docs/a.md:9: broken link 'missing.png'",
    ]


def test_control_fixing_the_tree_clears_the_report(tmp_path):
    _synthetic_tree(tmp_path)
    (tmp_path / "docs" / "orphan.md").unlink()
    (tmp_path / "docs" / "orphan.json").unlink()
    _write(tmp_path / "docs" / "missing.md", "# m\n")
    _write(tmp_path / "docs" / "missing.png", b"\x89PNG")
    index = tmp_path / "docs" / "README.md"
    index.write_text(index.read_text() + "[code](code.md)\n")
    assert check_docs(tmp_path) == ([], [])


def test_control_unindexed_and_undated_pages_are_reported(tmp_path):
    _synthetic_tree(tmp_path)
    assert unindexed_pages(tmp_path) == ["code.md", "orphan.md"]
    # undated.md says all three only after its first section, which does not count
    assert undated_measurement_pages(tmp_path) == [
        "undated.md: lacks a date, the machine, the command before its first section"
    ]

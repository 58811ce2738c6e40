"""docs/api.md's audit of the seed guide (issue 12 item 8) is checked, not just written.

The section "The seed guide, line by line (audit)" holds one table per kind of item (calls,
parameters, callbacks, events, error codes, FAQ promises), each row naming the tests that cover
it. Here: the section is there, every row has the five columns and cites at least one test,
no cell says an item is absent from the audit, every cited test exists, every `ErrorCode` is
in the error-code table and every public `P2PModule` method or property appears in the
section, so that a new code or call cannot be added without its row.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from xp2p.errors import ErrorCode
from xp2p.viewer import P2PModule

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "api.md"
TITLE = "## The seed guide, line by line (audit)"
NEXT_SECTION = "## The JavaScript SDK (web/)"
HEADER = ["seed name (guide §)", "Python form", "JS SDK form", "covered by", "differs? why"]
COVERED, DIFFERS = 3, 4
#: The tables the brief asks for, by their `###` titles.
TABLES = (
    "Calls",
    "xp2p's own calls (not in the guide)",
    "Parameters and fields",
    "Callbacks",
    "Events and notify subtypes",
    "Error codes",
    "FAQ and other promises",
)
#: A pytest node id: a file under tests/, then ``::`` parts (a class, a test, a [param]).
NODE_ID = re.compile(r"(tests/[\w/]+\.py)((?:::\w+)+)(\[[^\]\s]*\])?")
#: Public ``P2PModule`` names the section need not mention, with why. None so far: every
#: method and property is a seed call, one of its old names, or one of xp2p's own (listed).
NOT_AUDITED: dict[str, str] = {}


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (``\\|`` is a pipe inside a cell)."""
    inner = line.strip()
    assert inner.startswith("|") and inner.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner[1:-1])]


def section() -> str:
    text = API_MD.read_text("utf-8")
    start = text.find("\n" + TITLE + "\n")
    assert start >= 0, f"docs/api.md has no {TITLE!r} section"
    end = text.find("\n## ", start + 1)
    return text[start + 1 : end if end >= 0 else len(text)]


def tables(text: str) -> list[Table]:
    found: list[Table] = []
    title = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            title = line[4:].strip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            assert len(block) >= 2 and set(block[1]) <= set("|-: "), f"{title}: no separator"
            found.append(Table(title, cells(block[0]), [cells(b) for b in block[2:]]))
            continue
        i += 1
    return found


@pytest.fixture(scope="module")
def audit() -> list[Table]:
    return tables(section())


def test_the_section_is_in_the_python_part_before_the_js_sdk() -> None:
    text = API_MD.read_text("utf-8")
    assert TITLE in text.splitlines()
    assert text.index(TITLE) < text.index(NEXT_SECTION)


def test_every_table_is_there_with_the_five_columns(audit: list[Table]) -> None:
    assert [t.title for t in audit] == list(TABLES)
    for table in audit:
        assert table.header == HEADER, table.title
        assert table.rows, f"{table.title}: no rows"
        for row in table.rows:
            assert len(row) == len(HEADER), (table.title, row)
            for column in range(COVERED + 1):  # the last column may be empty: "no difference"
                assert row[column], (table.title, HEADER[column], row)


def test_no_cell_calls_an_item_missing(audit: list[Table]) -> None:
    offending = [
        (t.title, row[0], cell)
        for t in audit
        for row in t.rows
        for cell in row
        if "missing" in cell.lower()
    ]
    assert offending == []


def test_every_row_cites_a_test(audit: list[Table]) -> None:
    uncited = [(t.title, row[0]) for t in audit for row in t.rows if not cited(row[COVERED])]
    assert uncited == []


def cited(cell: str) -> list[tuple[str, str]]:
    """(file, test function) of every node id in ``cell``, a ``[param]`` suffix dropped."""
    return [(m.group(1), m.group(2).rsplit("::", 1)[-1]) for m in NODE_ID.finditer(cell)]


def test_every_cited_test_exists() -> None:
    # Node ids anywhere in the section: the "differs" column cites tests too.
    ids = sorted(set(cited(section())))
    assert len(ids) > 50
    gone = []
    for path, name in ids:
        file = ROOT / path
        source = file.read_text("utf-8") if file.is_file() else ""
        if not re.search(rf"^\s*(?:async\s+)?def {re.escape(name)}\(", source, re.MULTILINE):
            gone.append(f"{path}::{name}")
    assert gone == []


def test_every_error_code_has_its_row(audit: list[Table]) -> None:
    (table,) = [t for t in audit if t.title == "Error codes"]
    rows = {row[0].split("`")[1]: row for row in table.rows if row[0].count("`") >= 2}
    for code in ErrorCode:
        row = rows.get(str(int(code)))
        assert row is not None, f"no row for {int(code)} ({code.name})"
        assert f"ErrorCode.{code.name}" in row[1], row


def test_every_public_module_method_appears(audit: list[Table]) -> None:
    text = section()
    absent = []
    for name, member in inspect.getmembers(P2PModule):
        if name.startswith("_") or name in NOT_AUDITED:
            continue
        if inspect.isfunction(member):
            pattern = rf"(?<!\w){re.escape(name)}\("  # `p2p.stream(` but not `start_stream(`
        elif isinstance(member, property):
            pattern = rf"(?<!\w){re.escape(name)}(?!\w)"
        else:
            continue  # the seed's event constants, checked by their own row
        if not re.search(pattern, text):
            absent.append(name)
    assert absent == []
    assert set(NOT_AUDITED) <= set(dir(P2PModule)), "the allow-list names what is gone"

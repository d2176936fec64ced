"""Citations anyone can resolve: no internal shorthand in the code, configs and docs, and every
"Author Year" cited in the code listed in docs/references.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".c", ".h", ".md", ".yaml", ".yml", ".toml", ".txt", ".html", ".cfg"}

# Internal citation styles that an outside reader cannot resolve.
FORBIDDEN = {
    "document number": re.compile(r"[Ss]eed[ -]?00[0-4]"),
    "[T] shorthand": re.compile(r"(?<!\w)\[T\]"),  # not a type subscript such as Iterable[T]
    "[P] shorthand": re.compile(r"(?<!\w)\[P\]"),
    "ambiguity number": re.compile(r"\bambiguity\b", re.IGNORECASE),
    "DESIGN.md": re.compile(r"DESIGN\.md"),
    "issue number": re.compile(r"\bissue \d", re.IGNORECASE),
    "digest section": re.compile(r"\b[Ss]pec\s+(§|``|`[a-z]|[a-z-]+\.md)"),
}
# ``[T]`` / `[T]` inside code spans is tensor-shape notation, not a citation.
CODE_SPAN = re.compile(r"``.*?``|`[^`]*`")

# "Name YYYY", "Name et al. YYYY", "Name & Other YYYY".
AUTHOR_YEAR = re.compile(r"([A-Z][a-zäöüé]+(?: (?:et al\.|& [A-Z][a-z]+))? (?:19|20)\d\d)")
DOCUMENTS = ("Broomé 2022", "Mänttäri 2020", "Stergiou 2021", "Ilic 2024", "Feichtenhofer 2017")
# Matches of AUTHOR_YEAR that are not citations.
NOT_CITATIONS: set[str] = set()


def _files() -> list[Path]:
    out = [ROOT / "README.md"]
    for folder in ("src", "configs", "docs", "benchmarks", "tests"):
        out += [p for p in sorted((ROOT / folder).rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts
                and ".egg-info" not in str(p) and p.name != Path(__file__).name]  # this file plants the patterns
    return out


def _hits(files: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line: style: text`` of every forbidden citation style in ``files``."""
    hits = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            bare = CODE_SPAN.sub("", line)
            for name, pattern in FORBIDDEN.items():
                if pattern.search(bare):
                    hits.append(f"{path.relative_to(root)}:{number}: {name}: {line.strip()[:100]}")
    return hits


def test_no_internal_citation_styles():
    hits = _hits(_files())
    assert not hits, f"{len(hits)} unresolvable citation(s):\n" + "\n".join(hits)


def test_the_checker_finds_each_style(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('"""From seed 000 [T] §5.3; [P] Eq. 2; spec ambiguity 8; see DESIGN.md; issue 7."""\n'
                       '"""``mask [T]`` is a shape."""\n', encoding="utf-8")
    hits = _hits([planted], root=tmp_path)
    names = {hit.split(": ")[1] for hit in hits}
    assert names == {"document number", "[T] shorthand", "[P] shorthand", "ambiguity number", "DESIGN.md",
                     "issue number"}
    assert all(":1:" in hit for hit in hits)


def _cited_in_code() -> set[str]:
    cited = set()
    for path in (ROOT / "src").rglob("*"):
        if path.is_file() and path.suffix in {".py", ".c"}:
            cited |= set(AUTHOR_YEAR.findall(path.read_text(encoding="utf-8")))
    return cited - NOT_CITATIONS


def _listed(name: str, references: str) -> bool:
    """``name`` (or the same surname and year with or without "et al.", any a/b suffix) is listed."""
    surname, year = name.split(" ")[0], name.split(" ")[-1]
    if " & " in name:
        return re.search(re.escape(name) + r"[a-z]?\b", references) is not None
    return re.search(rf"{re.escape(surname)}(?: et al\.)? {year}[a-z]?\b", references) is not None


def test_every_cited_author_year_is_in_the_references():
    references = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    cited = _cited_in_code()
    assert set(DOCUMENTS) <= cited, "the five documents are cited in the code"
    missing = sorted(name for name in cited | set(DOCUMENTS) if not _listed(name, references))
    assert not missing, f"cited in src/ but not in docs/references.md: {missing}"


def test_every_document_has_an_entry_with_its_title():
    references = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    entries = {m.group(1): m.group(2) for m in
               re.finditer(r"^- \*\*(.+?)\*\* — (.+?)(?=^- |^#|\Z)", references, re.MULTILINE | re.DOTALL)}
    for name in DOCUMENTS:
        assert name in entries, f"{name} has no entry"
        assert re.search(r"\*[^*]+\*", entries[name]), f"{name}: no *title*"
        assert re.search(r"(19|20)\d\d", entries[name]), f"{name}: no year"


def test_each_reference_section_is_one_alphabetical_list_without_duplicates():
    references = (ROOT / "docs" / "references.md").read_text(encoding="utf-8")
    for section in re.split(r"^## ", references, flags=re.MULTILINE)[1:]:
        names = re.findall(r"^- \*\*(.+?)\*\*", section, re.MULTILINE)
        assert names == sorted(names, key=str.casefold), f"not alphabetical: {names}"
        assert len(names) == len(set(names)), f"duplicated entries: {names}"

"""The documentation holds together: the config reference is what the schema says now (`make docs` writes it), it
names every key a real config has, every relative link of README.md and docs/ reaches a file (and a heading, for
an #anchor), and docs/README.md lists every page."""

import re
from pathlib import Path

import yaml

from mlaflow.pipeline import configref
from mlaflow.pipeline import params as P

ROOT = P.REPO_ROOT
REFERENCE = ROOT / configref.OUTPUT
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")


def test_the_config_reference_is_what_the_schema_says():
    assert REFERENCE.read_text() == configref.render(P.load_schema()), (
        f"{configref.OUTPUT} is out of date with workflow/schemas/params.schema.yaml: run `make docs`"
    )


def test_the_config_reference_names_every_key_of_the_shipped_config():
    """Every key of params.yaml (validated: defaults filled) has its entry; a key of the user's choosing (a
    method, a variant) matches the entry that writes it `<method>`, `<name>` or `<key>`."""
    entries = re.findall(r"^- \*\*`([^`]+)`\*\*", REFERENCE.read_text(), flags=re.MULTILINE)
    patterns = [re.compile(r"[^.]+".join(map(re.escape, re.split(r"<\w+>", entry)))) for entry in entries]
    config = P.validate(yaml.safe_load((ROOT / "params.yaml").read_text()), check_files=False)
    missing = [key for key in _keys(config) if not any(p.fullmatch(key) for p in patterns)]
    assert len(entries) > 200 and not missing, missing


def _keys(config: dict, prefix: str = ""):
    for key, value in config.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{key}.")


def test_every_relative_link_reaches_a_file_and_a_heading():
    broken = []
    for page in PAGES:
        for line_number, target in _links(page):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            destination = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}:{line_number}: {target}"
            if not destination.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{where} (no such heading in {destination.relative_to(ROOT)})")
    assert not broken, "\n".join(broken)


def test_the_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text()
    pages = [page.name for page in (ROOT / "docs").glob("*.md") if page.name != "README.md"]
    assert pages and all(f"]({name})" in index for name in pages), pages


def _links(page: Path):
    """(line, target) of every Markdown link outside code blocks and code spans."""
    for number, line in _prose(page):
        for match in LINK.finditer(CODE_SPAN.sub("", line)):
            yield number, match[1]


def _prose(page: Path):
    fenced = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation but `-` and `_` dropped, spaces as `-`,
    repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for _, line in _prose(page):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = configref.anchor(heading[1])
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors

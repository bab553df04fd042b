"""The repository's own text: no pointer to files outside it, no dead link into ``docs/``.

The files checked are those in git's index (what the next commit contains: a new file counts
once it is added), read from the working tree; nothing else in the clone is read, such as a
virtual environment or a build folder in it. Git is required: without it, or outside a git
working tree, the tests fail (CI runs in a git clone). Binary files (a NUL byte, or not UTF-8)
are skipped. Anchors (``docs/math.md#the-irelbo``) are checked against the headings of the target
with GitHub's rules for heading ids (``github_anchors``).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Assembled, so that this file does not contain the strings it looks for.
_OUTSIDE = "shared"
OUTSIDE_REFERENCES = (f"../{_OUTSIDE}", f"{_OUTSIDE}/spec", f"{_OUTSIDE}/paper")

DOC_PATH_SUFFIXES = (".py", ".md", ".yaml", ".sh")
# The target of a Markdown link or image, ``[text](target)``.
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def doc_path_pattern(folder: str) -> re.Pattern:
    """A repository-relative path ``<folder>/<name>.md`` with an optional ``#anchor`` (not the
    tail of a longer path such as ``pkg/<folder>/x.md``)."""
    return re.compile(rf"(?<![\w./-]){re.escape(folder)}/((?:[\w.-]+/)*[\w.-]+\.md)"
                      r"(?:#([\w-]+))?")


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    """``git -C root args``, its output captured; the test fails, saying why, where git is not
    installed (module docstring)."""
    if shutil.which("git") is None:
        pytest.fail("git is not installed: the repository tests list the repository's own "
                    "files with git ls-files")
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def repository_files(root: Path) -> list[Path]:
    """The files in the index of the git repository at ``root`` that exist in the working tree
    (one deleted there but still in the index is left out), relative to ``root``; untracked
    files, ignored or not, are not the repository's."""
    done = git(root, "ls-files", "-z", "--cached")
    if done.returncode != 0:
        pytest.fail(f"{root} is not a git working tree: {done.stderr.decode().strip()}")
    names = sorted({name for name in done.stdout.decode().split("\0") if name})
    return [Path(name) for name in names if (root / name).is_file()]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte, or not valid UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(root: Path) -> list[str]:
    """``path:line: reference`` for every line of a text file that points outside the
    repository."""
    found = []
    for name in repository_files(root):
        text = read_text(root / name)
        for number, line in enumerate((text or "").splitlines(), 1):
            found += [f"{name}:{number}: {ref}" for ref in OUTSIDE_REFERENCES if ref in line]
    return found


def github_slug(heading: str) -> str:
    """The id GitHub gives a Markdown heading: its text without link targets, lower-cased,
    every character other than a letter, digit, ``_``, ``-`` or space removed, spaces turned
    into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def github_anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown document: the ids of its ATX headings outside fenced code
    (the n-th repetition of an id gets ``-n`` appended, as on GitHub), and explicit
    ``id="..."`` or ``name="..."`` attributes of HTML tags."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * 3
            elif stripped.startswith(fence):
                fence = None
            continue
        heading = re.match(r" {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", line)
        if fence is None and heading:
            slug = github_slug(heading.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    anchors.update(re.findall(r"<[^>]*\b(?:id|name)=\"([^\"]+)\"", markdown))
    return anchors


def _check_target(root: Path, where: str, target: Path, anchor: str | None,
                  anchors_of: dict[Path, set[str]]) -> str | None:
    """Why the link ``target#anchor`` found at ``where`` is broken, or None if it is not."""
    shown = os.path.relpath(target, root)
    if not target.is_file():
        return f"{where}: {shown} does not exist"
    if anchor:
        if target not in anchors_of:
            anchors_of[target] = github_anchors(target.read_text(encoding="utf-8"))
        if anchor not in anchors_of[target]:
            return f"{where}: {shown} has no heading with anchor #{anchor}"
    return None


def broken_doc_paths(root: Path, folder: str = "docs") -> list[str]:
    """Every ``<folder>/<name>.md[#anchor]`` mentioned in a .py, .md, .yaml or .sh file whose
    file or anchor does not exist."""
    broken, anchors_of, pattern = [], {}, doc_path_pattern(folder)
    for name in repository_files(root):
        if name.suffix not in DOC_PATH_SUFFIXES:
            continue
        text = read_text(root / name) or ""
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            problem = _check_target(root, f"{name}:{line}: {match.group(0)}",
                                    root / folder / match.group(1), match.group(2), anchors_of)
            broken += [problem] if problem else []
    return broken


def broken_markdown_links(root: Path) -> list[str]:
    """Every relative Markdown link ``[text](path#anchor)`` or ``[text](#anchor)`` of a .md
    file whose target file (relative to the linking file) or anchor does not exist."""
    broken, anchors_of = [], {}
    for name in repository_files(root):
        if name.suffix != ".md":
            continue
        text = read_text(root / name) or ""
        for match in MARKDOWN_LINK.finditer(text):
            link = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE):  # http:, mailto:, ...
                continue
            path, _, anchor = link.partition("#")
            target = (root / name).parent / path if path else root / name
            line = text.count("\n", 0, match.start()) + 1
            problem = _check_target(root, f"{name}:{line}: ({link})",
                                    Path(os.path.normpath(target)), anchor or None, anchors_of)
            broken += [problem] if problem else []
    return broken


# ------------------------------------------------------------------ the repository itself


def test_no_file_points_outside_the_repository():
    """Formulas, references and conventions live in docs/ (docs/math.md, docs/references.md,
    docs/configuration.md), not in folders beside the repository."""
    found = outside_references(ROOT)
    assert not found, "references to files outside the repository:\n" + "\n".join(found)


def test_every_docs_path_exists_with_its_anchor():
    broken = broken_doc_paths(ROOT)
    assert not broken, "broken docs/ references:\n" + "\n".join(broken)


def test_every_relative_markdown_link_exists_with_its_anchor():
    broken = broken_markdown_links(ROOT)
    assert not broken, "broken Markdown links:\n" + "\n".join(broken)


def test_the_math_page_has_the_anchors_code_cites():
    """The sections that the bounds, intervals and likelihoods cite by anchor."""
    anchors = github_anchors((ROOT / "docs" / "math.md").read_text(encoding="utf-8"))
    assert {"notation", "interval-likelihood-of-one-pixel", "stable-evaluation",
            "saturation-at-log_limit", "the-ielbo", "normalized-and-tolerant-variants",
            "the-importance-weighted-ielbo", "the-irelbo", "why-it-is-a-bound",
            "per-pixel-integrals", "limits-in-alpha", "density-bounds",
            "importance-sampled-log-likelihood", "discrete-likelihood-and-bits-per-dimension",
            "the-dawson-function", "other-likelihoods", "noise-fixes"} <= anchors


# ------------------------------------------------------------------ the checks themselves


@pytest.mark.parametrize("heading, slug", [
    ("The IRELBO", "the-irelbo"),
    ("Saturation at log_limit", "saturation-at-log_limit"),
    ("The authors' settings", "the-authors-settings"),
    ("Multi-GPU training of one run (DDP)", "multi-gpu-training-of-one-run-ddp"),
    ("Keys, defaults and checks", "keys-defaults-and-checks"),
    ("`intvae.numerics`: the [Dawson](https://x.org/d) function",
     "intvaenumerics-the-dawson-function"),
    ("Rényi  bound", "rényi--bound"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_github_anchors_number_repeats_and_skip_code():
    markdown = "# Title\n## Notes\n```bash\n# not a heading\n```\n## Notes ##\n### Notes\n"
    assert github_anchors(markdown) == {"title", "notes", "notes-1", "notes-2"}


def _git_repository(root: Path, files: dict[str, bytes | str]) -> None:
    """A git repository at ``root`` holding ``files``; those under ``new/`` stay untracked (as
    a virtual environment or a build folder in a clone) and ``.gitignore`` ignores
    ``ignored/``."""
    for name, content in {**files, ".gitignore": "ignored/\n"}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    tracked = [name for name in files if not name.startswith(("new/", "ignored/"))]
    for args in (("init", "-q"), ("add", "--", *tracked)):
        assert git(root, *args).returncode == 0, args


def test_outside_references_are_found(tmp_path):
    ref = OUTSIDE_REFERENCES
    _git_repository(tmp_path, {
        "pkg/mod.py": f'"""Formulas: ``{ref[0]}/notes/formulas.md`` section 3."""\n',
        "notes.md": f"line one\nsee {ref[2]}/paper.md\n",
        "clean.py": "x = 1  # a shared machine, not a path\n",
        "figure.png": b"\x89PNG\0" + ref[1].encode(),
        "new/draft.yaml": f"# {ref[1]}/references.md\n",
        "ignored/scratch.md": f"{ref[0]}\n",
    })
    assert outside_references(tmp_path) == [
        f"notes.md:2: {ref[2]}",
        f"pkg/mod.py:1: {ref[0]}",
    ]


def test_broken_doc_paths_and_links_are_found(tmp_path):
    """The same checks on a repository whose documentation folder is ``manual/``; untracked
    files are not read."""
    _git_repository(tmp_path, {
        "manual/math.md": "# Math\n## The IELBO\nSee [the IELBO](#the-ielbo) and [gone](#gone).\n"
                          "![a figure](figures/missing.png) [web](https://example.org/#x)\n",
        "manual/guide.md": "# Guide\n[math](math.md#the-ielbo), [nothing](nothing.md)\n",
        "pkg/ok.py": "# manual/math.md, manual/math.md#the-ielbo and manual/guide.md#guide\n",
        "pkg/bad.py": "x = 1\n# manual/math.md#the-irelbo\n# manual/missing.md\n",
        "conf/a.yaml": "# manual/guide.md#nowhere\n",
        "conf/b.txt": "# manual/missing.md (not a checked suffix)\n",
        "pkg/deeper/manual/x.md": "# X\n",
        "pkg/nested.sh": "# pkg/deeper/manual/x.md and other/manual/none.md: not manual/ paths\n",
        "new/draft.md": "[x](../manual/math.md#the-ielbo) [y](../manual/math.md#the-irelbo)\n",
        "new/lib/x.py": "# manual/math.md#nowhere\n",
    })
    assert broken_doc_paths(tmp_path, "manual") == [
        "conf/a.yaml:1: manual/guide.md#nowhere: manual/guide.md has no heading with anchor "
        "#nowhere",
        "pkg/bad.py:2: manual/math.md#the-irelbo: manual/math.md has no heading with anchor "
        "#the-irelbo",
        "pkg/bad.py:3: manual/missing.md: manual/missing.md does not exist",
    ]
    assert broken_markdown_links(tmp_path) == [
        "manual/guide.md:2: (nothing.md): manual/nothing.md does not exist",
        "manual/math.md:3: (#gone): manual/math.md has no heading with anchor #gone",
        "manual/math.md:4: (figures/missing.png): manual/figures/missing.png does not exist",
    ]

"""The fenced blocks of README.md and docs/*.md, with the marker comment that may precede each.

A marker is an HTML comment (invisible once rendered) on the line right before the opening
fence. Those the doc tests know:

- `<!-- not run: REASON -->`: the block is not executed; REASON says why (several machines, a
  pip install, the whole test suite, a benchmark that takes minutes, an illustrative fragment).
- `<!-- needs: several machines -->`: the same, in docs/deploy.md's words.
- `<!-- run by: tests/FILE.py -->`: that test module runs the block (in a setting this module
  cannot make, e.g. with an example package installed).
- `<!-- file: PATH -->`: the block is the content of file PATH of an example (a package); the
  test module of that example writes it and uses it.
- `<!-- continues the block above -->`: a python block that builds on the one before it; the two
  run in one interpreter, in order. Every other python block runs on its own, as a reader who
  copies one block would run it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
CONTINUES = "continues the block above"
MARKER_KINDS = ("not run", "needs", "run by", "file")
FENCE = re.compile(
    r"(?:^<!--(?P<marker>[^\n]*?)-->[ \t]*\n)?^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.S | re.M,
)
#: Words that end one command and start the next on a shell line.
SEPARATORS = ("&&", ";", "||")


@dataclass(frozen=True)
class Block:
    """One fenced block: its doc, language, text, marker (the comment's text) and line."""

    doc: Path
    lang: str
    body: str
    marker: str | None
    line: int

    @property
    def where(self) -> str:
        """`docs/dp.md:13`: the doc (from the checkout's root) and the line of the fence."""
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc.name
        return f"{doc}:{self.line}"

    def marked(self, kind: str) -> str | None:
        """The text after `kind:` if the block's marker is of that kind, else None."""
        if self.marker is None or not self.marker.startswith(f"{kind}:"):
            return None
        return self.marker[len(kind) + 1 :].strip()

    @property
    def continues(self) -> bool:
        return self.marker == CONTINUES


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of a markdown file, in order."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        marker = m["marker"].strip() if m["marker"] is not None else None
        line = text.count("\n", 0, m.start("lang")) + 1
        found.append(Block(doc, m["lang"].lower(), m["body"], marker, line))
    return found


def all_blocks(langs: set[str]) -> list[Block]:
    """The blocks of README.md and docs/*.md in one of these languages."""
    return [b for doc in DOCS for b in blocks(doc) if b.lang in langs]


def commands(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped, one entry per
    command of a line (split at `&&`, `;`, `||`), each re-quoted for `bash -c`. Pipes,
    redirections and background jobs are refused (ValueError): such a block needs a marker."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        segment: list[str] = []
        for word in [*lexer, ";"]:
            if word in SEPARATORS:
                if segment:
                    found.append(shlex.join(segment))
                segment = []
            elif word and set(word) <= set(lexer.punctuation_chars):
                raise ValueError(f"cannot run {line.strip()!r} command by command ({word!r})")
            else:
                segment.append(word)
    return found

"""Regenerate the README's result tables from the committed reports (each between its BEGIN/END markers).

    python benchmarks/readme_tables.py           # rewrite README.md's tables in place
    python benchmarks/readme_tables.py --check   # exit 1 if a table differs from its source

A block ``<!-- BEGIN table from reports/X/readme_snippet.md ... -->`` takes the markdown table of that snippet
(written by ``world_model.evaluation``; ``reports/X/readme_snippet.md table N ...``: its N-th table alone); ``<!-- BEGIN table from: python benchmarks/agents_table.py ARGS -->`` the
output of that command.  Everything outside the blocks is left as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- BEGIN table from:? (?P<source>.+?) -->\n)(?P<table>.*?)(\n<!-- END table -->)", re.S)


def table(source: str) -> str:
    """The markdown table a marker's source names."""
    if source.startswith("python benchmarks/agents_table.py "):
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import agents_table

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            agents_table.main(shlex.split(source)[2:])
        return out.getvalue().rstrip("\n")
    words = source.split(" ")
    lines = (ROOT / words[0]).read_text().splitlines()
    if len(words) >= 3 and words[1] == "table":  # "reports/X/readme_snippet.md table N ...": its N-th table alone
        tables, current = [], []
        for line in lines + [""]:
            if line.startswith("|"):
                current.append(line)
            elif current:
                tables.append(current)
                current = []
        return "\n".join(tables[int(words[2]) - 1])
    return "\n".join(line for line in lines if line.startswith("|"))


def render(text: str) -> str:
    """``text`` with every marked table regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + table(m.group("source")) + m.group(4), text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", default=str(ROOT / "README.md"), help="the file to update (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only check that the tables are up to date")
    a = p.parse_args(argv)
    text = Path(a.readme).read_text()
    new = render(text)
    if a.check:
        print("up to date" if new == text else f"{a.readme}: tables differ from their sources")
        return 0 if new == text else 1
    if new != text:
        from navgym.files import write_atomic

        write_atomic(a.readme, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The README: its two set-up commands, its tables regenerated from the committed reports, links that resolve,
short enough for a newcomer."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

SETUP = ['python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[all,test]" '
         '&& python examples/quickstart.py', "python -m pytest -q -n 2"]


def test_setup_commands_unchanged():
    block = README.split("## Set-up", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert block.splitlines() == SETUP


def test_tables_match_their_sources():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    assert len(tables.BLOCK.findall(README)) == 4
    assert tables.render(README) == README, "run: python benchmarks/readme_tables.py"
    assert "## World-model pretraining" in README


def test_links_resolve_and_readme_is_short():
    for doc in (ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "environment.md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"
    prose = [line for line in README.splitlines() if not line.startswith(("|", "<!--"))]
    assert len(README.splitlines()) <= 200 and max(map(len, prose)) <= 160

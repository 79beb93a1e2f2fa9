"""The docs: the tables taken from the code are current, the README stays short, and every file
it links to (the pages, the picture) is there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_generated_tables_are_current():
    done = subprocess.run(
        [sys.executable, "scripts/generate_docs.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert "assets/screenshot.png" in links and any(link.startswith("docs/") for link in links)
    for page in [ROOT / link for link in links if not link.startswith("http")]:
        assert page.is_file(), page
    for doc in (ROOT / "docs").glob("*.md"):  # the pages' links to each other
        for link in re.findall(r"\]\(([^)#]+\.md)\)", doc.read_text()):
            assert (doc.parent / link).is_file(), (doc.name, link)

"""The README's examples run as written: the "Use it" script is extracted, run as a file
(exactly as a user who saved it would run it), and its output compared with the one shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(marker: str) -> str:
    """The fenced block that follows `<!-- marker -->` in README.md."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```", text, re.DOTALL)
    assert found, f"README.md has no block after <!-- {marker} -->"
    return found.group(1)


def test_the_use_it_script_runs_as_written_and_prints_what_the_readme_shows(
    tmp_path: Path,
) -> None:
    script = tmp_path / "use_jobq.py"
    script.write_text(_block("example: use-it"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == _block("output: use-it")
    assert done.stderr == ""  # no warning, no traceback

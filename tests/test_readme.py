"""README's quickstart, run as written (the lines of the block marked `quickstart`), so that it
cannot drift from the code: DIR is the shared data folder, `runs/` a temporary folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from recalign.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- quickstart: run by tests/test_readme.py -->\n```bash\n(.*?)```", text, re.S)
    assert block, "README.md lost its quickstart block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.startswith("recalign ")]


def test_the_quickstart_block_covers_a_whole_session():
    verbs = [shlex.split(c)[1] for c in quickstart_commands()]
    assert {"pretrain", "reward-model", "posttrain", "evaluate", "recommend"} <= set(verbs)


@pytest.mark.data
def test_readme_quickstart_runs(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # runs/ is created here
    for command in quickstart_commands():
        argv = [str(shared_data) if a == "DIR" else a for a in shlex.split(command)[1:]]
        assert main(argv) == 0, f"{command}\n{capsys.readouterr().err}"
        out = capsys.readouterr().out
        if argv[0] == "recommend":
            assert "Toy Story" in out or re.search(r"\(\d{4}\)", out), out  # titles are shown

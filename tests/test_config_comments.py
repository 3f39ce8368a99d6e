"""Config comments cite only files that are in the repo (or the shared data beside it)."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
_CITED = re.compile(r"(?<![\w/.-])((?:\.\./)?[\w.-]+(?:/[\w.-]+)*\.(?:md|py|yaml))\b")
OUTPUTS = {"results.md"}  # files a command writes, named in comments that say where they go


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_config_comments_cite_existing_files(config) -> None:
    missing = []
    for n, line in enumerate(config.read_text().splitlines(), 1):
        if "#" not in line:
            continue
        for cited in _CITED.findall(line[line.index("#") :]):
            if cited.startswith("../shared/") or cited in OUTPUTS:
                continue  # the real-audio fixtures beside the repo, not a repo file
            if not any((base / cited).exists() for base in (REPO, config.parent, REPO / "configs")):
                missing.append(f"{config.name}:{n}: {cited}")
    assert not missing, f"config comments cite files that are not in the repo: {missing}"

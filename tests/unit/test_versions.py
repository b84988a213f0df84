"""The Paddle/PaddleNLP releases llmpt is written against are stated once (llmpt/versions.py); the install pins agree."""

from __future__ import annotations

import re
from pathlib import Path

from llmpt import versions

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_install_pins_are_the_tested_releases():
    text = PYPROJECT.read_text()
    assert re.search(r'"paddlepaddle==([^"]+)"', text).group(1) == versions.PADDLE
    assert re.search(r'"paddlenlp==([^"]+)"', text).group(1) == versions.PADDLENLP

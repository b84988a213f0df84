"""The releases llmpt is written and tested against (pyproject.toml's `train` extra pins the same; a test checks)."""

PADDLE = "3.3.1"  # llmpt/train/cpu_backend.py patches this release's fleet internals
PADDLENLP = "3.0.0b4"  # llmpt/strategies/expand.py mirrors this release's TrainingArguments

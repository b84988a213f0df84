"""Per-rank training code: the only place (with llmpt.data) that imports paddle at module level."""

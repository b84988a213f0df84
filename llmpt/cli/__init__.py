"""The llmpt command line: thin Typer sub-apps over library functions."""

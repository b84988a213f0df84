"""llmpt: checked, repeatable LLM pretraining on PaddlePaddle + PaddleNLP."""

__version__ = "0.1.0"

"""Weights in and out: what `--init-from` accepts (a PaddleNLP directory, a Hugging Face directory, a model id in the
local caches) and what `llmpt export` writes (Hugging Face or PaddleNLP layout), through one conversion table per
family (families.py). Reading headers and configs needs neither paddle nor numpy; converting tensors needs numpy."""

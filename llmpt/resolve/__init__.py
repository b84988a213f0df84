"""How a request becomes a run (README: "How a run is resolved").

CLI flags (cli/options.py)  ->  RunRequest (request.py)  ->  layers: --config, flags, --set (request.py)
  ->  checked layout: model, strategy, topology, degrees, expansion (layout.py)
  ->  data and tokenizer: the vocabulary becomes known (run.py)
  ->  the planner's estimate, computed once; refused if it does not fit (layout.py, planner/)
  ->  RunConfig (run_config.py)  ->  <run>/run.yaml (launch/)  ->  ranks (train/entry.py)
"""

from llmpt.resolve.layout import Plan, check_fits, knob_hint
from llmpt.resolve.request import RunRequest
from llmpt.resolve.run import resolve_plan, resolve_run

__all__ = ["Plan", "RunRequest", "check_fits", "knob_hint", "resolve_plan", "resolve_run"]

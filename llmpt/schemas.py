"""The name and version of every JSON document llmpt prints (`--json`) or writes (summary.json), in one table.

Every document is an object whose `schema` key is one of these. Within a version keys are only ever added; a key
renamed or removed is a new version (README: "JSON output")."""

from __future__ import annotations

PRESETS = "llmpt.presets/1"  # presets list: {"presets": [{name, ranks, min_ranks, dp, tp, pp, sharding, …}]}
STRATEGY = "llmpt.strategy/1"  # presets show: the resolved strategy's fields
STRATEGY_CHECK = "llmpt.strategy-check/1"  # presets validate: {file, valid, strategy}
MODELS = "llmpt.models/1"  # models list: {"models": [registry entry, …]}
MODEL = "llmpt.model/1"  # models show: the registry entry's fields + paddlenlp_config
MATRIX = "llmpt.matrix/1"  # matrix (also --model, --strategy, --verify)
PLAN = "llmpt.plan/1"  # plan: model, strategy, degrees, …, command, estimate
DRY_RUN = "llmpt.dry-run/1"  # train --dry-run: {command, run_yaml_path, run_config}
RUN_SUMMARY = "llmpt.run-summary/1"  # train, run-node on node 0; also <output_dir>/summary.json
NOTHING_TO_TRAIN = "llmpt.nothing-to-train/1"  # train/run-node --resume of a finished run: {output_dir, why}
TUNE = "llmpt.tune/1"  # tune: {model, gpus, …, candidates: [{strategy, set, tokens_per_card_per_sec, …}], min_gpus}
STATUS = "llmpt.status/1"  # status RUN_DIR: {state, step, max_steps, last_loss, ranks, checkpoints, …}
NODE_SUMMARY = "llmpt.node-summary/1"  # run-node on another node: {node_rank, ranks_finished, summary}
PREPARE_DATA = "llmpt.prepare-data/1"  # prepare-data: documents, tokens, output_prefix, …
REHEARSAL = "llmpt.rehearsal/1"  # rehearse: {model, strategy, ranks, set, passed, stages}
DOCTOR = "llmpt.doctor/1"  # doctor: {ok, checks, facts}
LAUNCH_SCRIPT = "llmpt.launch-script/1"  # launch-script: {output_dir, run_yaml_path, script_path, …}
EXPORT = "llmpt.export/1"  # export: {source, weights, format, dtype, output_dir, merged, files, …}
ERROR = "llmpt.error/1"  # any command's refusal or failure with --json, on stderr: {kind, error, hint, exit_code}

ALL = (
    PRESETS, STRATEGY, STRATEGY_CHECK, MODELS, MODEL, MATRIX, PLAN, DRY_RUN, RUN_SUMMARY, NODE_SUMMARY,
    PREPARE_DATA, REHEARSAL, DOCTOR, LAUNCH_SCRIPT, EXPORT, ERROR, NOTHING_TO_TRAIN, STATUS, TUNE,
)  # fmt: skip

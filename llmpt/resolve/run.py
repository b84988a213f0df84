"""`llmpt train`'s resolution, one way through: request -> layers -> checked layout -> data and tokenizer (the
vocabulary becomes known) -> the plan's estimate, computed once -> one RunConfig, which holds everything the ranks
need (resume included). Nothing here writes to the run directory; launch/ does that after every check passed."""

from __future__ import annotations

import math
from pathlib import Path

from llmpt import __version__
from llmpt.errors import LlmptError, ModelError
from llmpt.interop.source import check_tokenizer, find_init
from llmpt.launch.checkpoints import last_complete
from llmpt.launch.command import check_master_port
from llmpt.models.registry import (
    NOT_TRAINABLE,
    ModelSpec,
    added_token_ids,
    dropout_config,
    padded_vocab,
    paddlenlp_config,
)
from llmpt.resolve.layout import Plan, check_fits, check_layout, estimated
from llmpt.resolve.request import RunRequest, apply_model_settings, check_split_documents, read_layers
from llmpt.resolve.resume import check_resume
from llmpt.run_config import DataSection, ModelSection, RunConfig
from llmpt.strategies.expand import run_training_args


def resolve_run(req: RunRequest) -> RunConfig:
    """Every check `llmpt train` makes before a rank starts; the RunConfig the ranks will read."""
    layers = read_layers(req)
    train = layers.train  # every train.* key checked, and the schedule against itself (request.py)
    from_scratch = req.init_from is None
    plan = check_layout(req, layers)
    spec = plan.model
    if spec.family in NOT_TRAINABLE:
        raise LlmptError(
            f"llmpt train cannot pretrain {spec.id} ({spec.family}): {NOT_TRAINABLE[spec.family]}",
            "llmpt plan still checks it; trainable families: llama (incl. Baichuan), qwen, gpt, opt, bloom, chatglm2",
        )
    init = find_init(req.init_from, spec) if req.init_from else None  # llmpt/interop/source.py: found and checked
    model_cfg = dict(init.paddle_config) if init else paddlenlp_config(spec, plan.seq_len)
    layers.notes.extend(apply_model_settings(spec, model_cfg, plan.seq_len, layers, bool(req.init_from)))
    try:
        model_cfg.update(dropout_config(spec, train.dropout))
    except ModelError as e:  # said with the dropout as the user gave it (--set train.dropout=0.1, a file's key)
        given = layers.setting("train", "dropout")
        said = given.show(("train", "dropout")) if given else f"train.dropout {train.dropout}"
        raise ModelError(f"{said}: {e.message.split(': ', 1)[-1]}", e.hint) from None

    prefixes, given_weights = _weighted(_data_prefixes(req, layers, spec))
    tokenizer_vocab = _tokenizer_vocab(prefixes)
    added = added_token_ids(spec.family, tokenizer_vocab, model_cfg)  # ChatGLM/GLM's gMASK and BOS
    if from_scratch:
        # run_pretrain.py: from scratch, the vocabulary grows to the tokenizer's, rounded up to 128
        needed = max([tokenizer_vocab - 1, *added.values()]) + 1
        model_cfg["vocab_size"] = max(model_cfg["vocab_size"], padded_vocab(needed))
    elif added and max(added.values()) >= model_cfg["vocab_size"]:
        raise ModelError(
            f"--init-from {req.init_from}: {spec.family} needs {', '.join(added)} in every sample, but its "
            f"{model_cfg['vocab_size']}-token vocabulary has no id for them after the data's {tokenizer_vocab} tokens",
            "train from scratch, or from a checkpoint whose config.json states them",
        )
    model_cfg.update(added)
    plan = estimated(plan, model_cfg["vocab_size"])  # the model that will really be built, estimated once
    check_fits(plan, req.force)  # before the data is required or verified: a run that cannot fit is refused at once
    if not prefixes:
        raise LlmptError(
            f"--data is required for {spec.id} (only the tiny models default to the shipped corpus)",
            "prepare it with: llmpt prepare-data INPUT… --output PREFIX --tokenizer DIR, then --data PREFIX",
        )
    manifests, tokenizer_dir = check_data(prefixes, model_cfg["vocab_size"])
    check_split_documents(layers, manifests | _unprepared(prefixes))
    weights, epochs = _mix(prefixes, given_weights, manifests | _unprepared(prefixes), layers, train, plan)
    if init is not None:
        # the weights' tokenizer must be the data's; the data's copy (which prepare-data loaded) is the one used
        data_tokenizers = {p: m["tokenizer"] for p, m in (manifests | _unprepared(prefixes)).items()}
        if note := check_tokenizer(init, data_tokenizers):
            layers.notes.append(note)
        elif not data_tokenizers and (Path(init.directory) / "tokenizer_config.json").is_file():
            tokenizer_dir = str(init.directory)
    if req.local:
        check_master_port(req.master, req.node_rank)
    output_dir = str(plan.output_dir)
    cfg = RunConfig(
        llmpt_version=__version__,
        output_dir=output_dir,
        device=plan.topology.device,  # type: ignore[arg-type]
        world_size=plan.expansion.world_size,
        nnodes=plan.topology.nnodes,
        devices=plan.topology.devices,
        master=plan.topology.master,
        node_rank=plan.topology.node_rank,
        resume_from=_resume_from(Path(output_dir)) if req.resume else None,
        model=ModelSection(
            id=spec.id,
            family=spec.family,
            config=model_cfg,
            init_from=str(init.load_dir) if init else None,
            init_source=init.record() if init else None,
        ),
        strategy=plan.strategy,
        degrees=plan.expansion.degrees,
        training_args=run_training_args(
            plan.expansion, plan.strategy, train, output_dir, plan.topology.device, layers.training_args
        ),
        model_args=plan.expansion.model_args,
        data=DataSection(
            prefixes=prefixes,
            split=layers.split,
            seq_len=plan.seq_len,
            tokenizer_dir=tokenizer_dir,
            manifests=manifests,
            weights=weights,
            epochs=epochs,
            repeat_warning=layers.section("data").get("repeat_warning", 4.0),
        ),
        train=train,
        notes=[*layers.notes, *plan.notes],
        estimate=None if plan.estimate is None else plan.estimate.to_dict(),
    )
    # the checkpoint's model, batch and layout against this run's (llmpt/resolve/resume.py)
    return cfg if cfg.resume_from is None else check_resume(cfg)


def resolve_plan(req: RunRequest) -> Plan:
    """What `llmpt plan` shows: the checked layout and its estimate for the model as the registry states it."""
    return estimated(check_layout(req, read_layers(req)))


def _data_prefixes(req: RunRequest, layers, spec: ModelSpec) -> list[str]:
    prefixes = list(req.data) or layers.section("data").get("prefixes")
    if prefixes:
        if (blank := next((p for p in prefixes if not str(p).strip()), None)) is not None:
            raise LlmptError(f"--data {blank!r}: an empty prefix", "pass --data PREFIX (PREFIX.bin and PREFIX.idx)")
        return list(prefixes)
    return [_shipped_corpus()] if req.demo or spec.id.endswith("-tiny") else []


def _weighted(items: list[str]) -> tuple[list[str], list[float] | None]:
    """`--data 0.7:PREFIX --data 0.3:PREFIX` -> prefixes and their weights; bare prefixes -> (prefixes, None)."""
    prefixes, weights = [], []
    for item in items:
        head, sep, rest = str(item).partition(":")
        try:
            w = float(head) if sep and rest else None
        except ValueError:
            w = None  # a ':' inside a path, not a weight
        if w is not None and not (w > 0 and math.isfinite(w)):
            raise LlmptError(f"--data {item}: the weight must be a number > 0", "e.g. --data 0.7:PREFIX")
        prefixes.append(rest if w is not None else str(item))
        weights.append(w)
    given = [w for w in weights if w is not None]
    if given and len(given) != len(weights):
        bare = next(p for p, w in zip(prefixes, weights, strict=True) if w is None)
        raise LlmptError(
            f"--data {bare}: give every prefix a weight or none (without weights each weighs by its tokens)",
            f"e.g. --data 0.5:{bare}",
        )
    return prefixes, [w / sum(given) for w in given] if given else None


def _mix(prefixes, given, facts, layers, train, plan) -> tuple[list[float], list[float | None]]:
    """Each prefix's share of the training mix (given, else by its tokens) and how many times the run will see its
    training documents, with a note per corpus (a run warns of those above data.repeat_warning as it starts)."""
    from llmpt.data.prepare import open_prepared

    tokens: list[int | None] = []
    for p in prefixes:
        n = (facts.get(p) or {}).get("tokens")
        if n is None and not _unprepared([p]):
            n = int(open_prepared(p, "--data")[0].sizes.sum())  # data without a manifest: count it
        tokens.append(None if n is None else int(n))
    if given is None:
        counted = all(tokens)
        given = [t / sum(tokens) for t in tokens] if counted else [1 / len(tokens)] * len(tokens)  # type: ignore
    split = [float(x) for x in str(layers.split).split(",")]
    train_share = split[0] / sum(split)
    b = plan.strategy.batch
    run_tokens = train.max_steps * b.micro_batch_size * b.grad_accum * plan.expansion.degrees.data_degree * plan.seq_len
    epochs: list[float | None] = []
    for p, t, w in zip(prefixes, tokens, given, strict=True):
        e = run_tokens * w / (t * train_share) if t else None
        epochs.append(None if e is None else round(e, 4))
        if t is None:  # the shipped corpus before launch prepares it: its size is not known yet
            layers.notes.append(
                f"data {p}: weight {w:.3f}; prepared at launch, so its tokens and epochs are not known yet"
            )
        else:
            seen = "no" if e is None else f"~{e:.2f}"
            layers.notes.append(f"data {p}: {t} tokens, weight {w:.3f}, {seen} epochs")
    return given, epochs


def _shipped_corpus() -> str:
    """The shipped corpus's place in the cache. Not prepared here: launch prepares it once every check passed
    (llmpt.data.prepare.prepare_shipped); until then its facts stand in for its manifest (_unprepared)."""
    from llmpt.data.prepare import shipped_prefix

    return str(shipped_prefix())


def _unprepared(prefixes: list[str]) -> dict[str, dict]:
    """The shipped corpus when it is not prepared yet: what its manifest will say (documents, tokenizer)."""
    from llmpt.data.prepare import shipped_pending
    from llmpt.data.tokenizer import shipped_corpus_facts

    return {p: shipped_corpus_facts() for p in prefixes if shipped_pending(p)}


def _tokenizer_vocab(prefixes: list[str]) -> int:
    """The largest vocabulary the data was (or, for the shipped corpus, will be) tokenized with (0 when no prefix
    has a manifest)."""
    from llmpt.data.prepare import read_manifest

    known = _unprepared(prefixes)
    return max((m["tokenizer"]["vocab_size"] for p in prefixes if (m := known.get(p) or read_manifest(p))), default=0)


def check_data(prefixes: list[str], vocab_size: int) -> tuple[dict[str, dict], str]:
    """Each prefix opens, agrees with its manifest, and has ids below the model's vocabulary."""
    from llmpt.data.inputs import DataError
    from llmpt.data.prepare import open_prepared, shipped_pending, verified_cache, verify_prepared
    from llmpt.data.tokenizer import SHIPPED_TOKENIZER

    manifests, tokenizer_dir = {}, None
    for prefix in prefixes:
        if shipped_pending(prefix):
            continue  # prepared at launch from the shipped files, with the shipped tokenizer
        ds, m = open_prepared(prefix, "--data")
        if m is not None:
            verify_prepared(prefix, m, "--data", verified_cache())
            if (m["documents"], m["tokens"]) != (len(ds), int(ds.sizes.sum())):
                raise DataError(
                    f"--data {prefix}: files hold {len(ds)} documents / {int(ds.sizes.sum())} tokens but the manifest "
                    f"says {m['documents']} / {m['tokens']} (changed since prepare-data?)",
                    "prepare the data again",
                )
            if m.get("max_id") is not None and m["max_id"] >= vocab_size:
                raise DataError(
                    f"--data {prefix}: holds token id {m['max_id']}, at or above the model's vocabulary of "
                    f"{vocab_size} (tokenized with {m['tokenizer'].get('class', 'another tokenizer')}, "
                    f"{m['tokenizer'].get('num_ids', m['tokenizer']['vocab_size'])} ids)",
                    "prepare the data with the model's own tokenizer: llmpt prepare-data … --tokenizer MODEL_OR_DIR",
                )
            if m["tokenizer"]["vocab_size"] > vocab_size:
                raise DataError(
                    f"--data {prefix}: tokenized with a {m['tokenizer']['vocab_size']}-token vocabulary, larger than "
                    f"the model's {vocab_size}"
                )
            manifests[prefix] = m
            tokenizer_dir = tokenizer_dir or m["tokenizer"]["dir"]
    return manifests, tokenizer_dir or str(SHIPPED_TOKENIZER)


def _resume_from(output_dir: Path) -> str:
    """--resume: the newest checkpoint every rank finished (llmpt/launch/checkpoints.py)."""
    ckpt = last_complete(output_dir)
    if ckpt is None:
        raise LlmptError(
            f"--resume: no complete checkpoint in {output_dir}",
            "train without --resume first, or pass the run's own --output-dir (the default follows --strategy)",
        )
    return str(ckpt)

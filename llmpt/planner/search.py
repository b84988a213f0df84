"""When no change of the layout fits on the given devices: the fewest devices, and the fastest layout on them that
fits (the grammar, the matrix and the model's shape allow it)."""

from __future__ import annotations

import itertools
from dataclasses import replace

from llmpt.planner.devices import Device
from llmpt.planner.estimate import Estimate, Layout, allowed, estimate, renamed

MAX_WORLD = 4096  # the largest job the search considers (512 nodes of 8)
TP_MAX = 8  # tensor parallel stays inside one node's NVLink domain
NODE_GPUS = 8  # devices per node assumed when more are needed than the user's node count gives (the seed's 8x A100)


def fewest_devices(lay: Layout, device: Device | None, capacity_mb: float) -> tuple[int, int, Layout, Estimate] | None:
    """(world size, devices per node, layout, estimate) on the fewest devices (doubling) where a layout fits."""
    per_node = max(lay.nproc_per_node, NODE_GPUS)
    world = lay.degrees.world_size * 2
    while world <= MAX_WORLD:
        best: tuple[Layout, Estimate] | None = None
        node = min(per_node, world)
        for cand in _layouts_on(lay, world, node):
            if not allowed(cand, device is None):
                continue
            e = estimate(cand, device)
            if e.memory_mb_per_card > capacity_mb:
                continue
            if best is None or _score(e) > _score(best[1]):
                best = (cand, e)
        if best is not None:
            return world, node, best[0], best[1]
        world *= 2
    return None


def _score(e: Estimate) -> tuple[float, float]:
    return (e.tokens_per_card_per_sec or 0.0, -e.memory_mb_per_card)


def _layouts_on(lay: Layout, world: int, per_node: int):
    """The layouts of `world` ranks that split the model further: tp up to a node (with sequence parallel), pp over
    the layers, the rest sharded (stage 1-3), with the current recompute or full recompute."""
    s, d = lay.strategy, lay.degrees
    layers = lay.spec.num_hidden_layers
    tps = [t for t in (1, 2, 4, 8) if d.tp <= t <= min(TP_MAX, per_node)]
    pps = [p for p in (1, 2, 4, 8, 16, 32) if d.pp <= p <= layers]
    granularities = dict.fromkeys((s.recompute.granularity, "full"))
    for tp in tps:
        for pp in pps:
            split = tp * pp * d.sep * d.cp
            if world % split:
                continue
            rest = world // split
            sps = dict.fromkeys((s.parallel.sequence_parallel and tp > 1, tp > 1))
            for stage, g, sp in itertools.product((1, 2, 3) if rest > 1 else (1,), granularities, sps):
                acc = max(s.batch.grad_accum, pp)
                try:
                    # no data parallel here, so no expert parallel either (ep = dp on the pinned stack)
                    degrees = {"dp": None, "tp": tp, "pp": pp, "sharding": rest, "stage": stage, "ep": 1}
                    offload = s.parallel.offload and stage > 1 and rest > 1
                    vpp = s.parallel.virtual_pp if pp > 1 else 1
                    st = renamed(s, d, granularity=g, offload=offload, virtual_pp=vpp, sequence_parallel=sp, **degrees)
                    dims = replace(d, dp=1, tp=tp, pp=pp, sharding=rest, ep=1)
                except Exception:  # noqa: BLE001 - a combination the grammar refuses is simply not a candidate
                    continue
                st = st.model_copy(update={"batch": st.batch.model_copy(update={"grad_accum": acc})})
                yield replace(lay, strategy=st, degrees=dims, nproc_per_node=per_node)

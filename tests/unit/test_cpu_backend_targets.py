"""Every entry of llmpt/train/cpu_backend.py's patch table still fits the installed Paddle, so an upgrade that moves a
target fails here, by the patch's name, instead of deep inside a CPU training run."""

from __future__ import annotations

import inspect

import pytest

from llmpt.train.cpu_backend import PATCHES, Patch

pytestmark = pytest.mark.paddle


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_target_exists_with_the_expected_signature(patch: Patch):
    pytest.importorskip("paddle")
    from llmpt.train.cpu_backend import check_target

    assert check_target(patch) == [], f"cpu_backend patch {patch.name} no longer fits: {check_target(patch)}"


@pytest.mark.parametrize("patch", PATCHES, ids=lambda p: p.name)
def test_cpu_implementation_takes_what_the_target_takes(patch: Patch):
    params = list(inspect.signature(patch.cpu).parameters.values())
    assert params[0].name == "original", f"{patch.name}: the CPU implementation receives Paddle's original first"
    if patch.expects_signature is None or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return
    assert tuple(p.name for p in params[1:]) == patch.expects_signature


def test_table_is_well_formed():
    names = [p.name for p in PATCHES]
    assert len(names) == len(set(names))
    for p in PATCHES:
        assert p.why.strip(), p.name
        assert (p.uses is not None) == (p.mechanism == "proxy"), f"{p.name}: a proxy states how often its name is used"


def test_install_applies_every_entry_under_the_guard():
    """install() in this process (no other unit test uses paddle; the patches only act on CPU in dynamic mode):
    every target now delegates to the original kept in ORIGINALS, and outside dynamic mode the original answers."""
    paddle = pytest.importorskip("paddle")
    from paddle.distributed.parallel import ParallelEnv

    from llmpt.train import cpu_backend

    paddle.set_device("cpu")
    assert cpu_backend.install() is True
    for patch in PATCHES:
        _, _, _, obj = cpu_backend._resolve(patch)
        patched = obj.fget if isinstance(obj, property) else obj
        assert patched.__llmpt_original__ is cpu_backend.ORIGINALS[patch.name], patch.name
        assert cpu_backend.check_target(patch) == [], patch.name
    assert ParallelEnv().device_id == 0  # CPU, dynamic mode: the CPU implementation
    paddle.enable_static()
    try:
        with pytest.raises(AttributeError, match="_device_id"):  # static mode: Paddle's own property
            _ = ParallelEnv().device_id
    finally:
        paddle.disable_static()

"""Residual-stream capture and patching, checked against output_hidden_states for every family."""

from __future__ import annotations

import pytest
import torch
from helpers.tiny import FAMILIES

from actspace.lm.hooks import add_to_residual, capture_residual, patch_residual
from actspace.lm.models import (
    FAMILIES as FAMILY_TABLE,
)
from actspace.lm.models import (
    last_hidden_state_is_normed,
    load_model,
    residual_blocks,
)

IDS_A = torch.tensor([[5, 17, 42, 8, 99, 23, 61]])
IDS_B = torch.tensor([[31, 12, 77, 54, 3, 88, 40]])


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    cache: dict[str, torch.nn.Module] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = load_model(tiny_model_dir(family), dtype="float32", device="cpu")[0]
        return cache[family]

    return get


def _hook_count(blocks) -> int:
    return sum(len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_capture_matches_output_hidden_states(family, loaded):
    model = loaded(family)
    blocks = residual_blocks(model)
    n = len(blocks)
    model(IDS_A, output_hidden_states=True)  # transformers installs its own recorder hooks once
    before = _hook_count(blocks)
    ids = torch.cat([IDS_A, IDS_B])
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with capture_residual(blocks) as captured:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert _hook_count(blocks) == before
    hidden = out.hidden_states
    assert len(captured) == len(hidden) == n + 1
    for k in range(n):
        assert captured[k].shape == (2, 7, 32)
        assert not captured[k].requires_grad
        torch.testing.assert_close(captured[k], hidden[k], rtol=0, atol=0)
    assert last_hidden_state_is_normed(model)
    assert not torch.allclose(captured[n], hidden[n])
    # The reported last state is the final norm of the captured last block output.
    final_norm = model.get_submodule(FAMILY_TABLE[model.config.model_type][1])
    torch.testing.assert_close(final_norm(captured[n]), hidden[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_patch_identity_leaves_logits_unchanged(family, loaded):
    model = loaded(family)
    base = model(IDS_A).logits
    for block in residual_blocks(model):
        with patch_residual(block, lambda h: h):
            torch.testing.assert_close(model(IDS_A).logits, base, rtol=0, atol=0)
    torch.testing.assert_close(model(IDS_A).logits, base, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_patch_other_run_reproduces_its_logits(family, loaded):
    model = loaded(family)
    blocks = residual_blocks(model)
    logits_a = model(IDS_A).logits
    with capture_residual(blocks) as captured_b:
        logits_b = model(IDS_B).logits
    assert not torch.allclose(logits_a, logits_b, atol=1e-3)
    for k, block in enumerate(blocks):
        with patch_residual(block, lambda h, k=k: captured_b[k + 1].clone()):
            patched = model(IDS_A).logits
        torch.testing.assert_close(patched, logits_b, rtol=1e-5, atol=1e-5)
    # Patching only the last position leaves earlier positions as they were (causal attention).
    replacement = captured_b[2]

    def last_position(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        h[:, -1] = replacement[:, -1]
        return h

    with patch_residual(blocks[1], last_position):
        patched = model(IDS_A).logits
    torch.testing.assert_close(patched[:, :-1], logits_a[:, :-1], rtol=0, atol=0)
    assert not torch.allclose(patched[:, -1], logits_a[:, -1], atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_add_to_residual(family, loaded):
    model = loaded(family)
    blocks = residual_blocks(model)
    with capture_residual(blocks) as base_states:
        base = model(IDS_A).logits
    with add_to_residual(blocks[0], torch.zeros(32)):
        torch.testing.assert_close(model(IDS_A).logits, base, rtol=0, atol=0)

    vector = torch.linspace(-2.0, 2.0, 32)
    # Entered before the steering, the capture still sees the steered output (patches run first).
    with (
        capture_residual(blocks) as steered_states,
        add_to_residual(blocks[1], vector, positions=slice(-1, None)),
    ):
        steered = model(IDS_A).logits
    expected = base_states[2].clone()
    expected[:, -1] += vector
    torch.testing.assert_close(steered_states[2], expected, rtol=0, atol=0)
    torch.testing.assert_close(steered[:, :-1], base[:, :-1], rtol=0, atol=0)
    assert (steered[:, -1] - base[:, -1]).abs().max() > 1e-3

    with add_to_residual(blocks[1], vector):
        everywhere = model(IDS_A).logits
    assert ((everywhere - base).abs().amax(dim=-1) > 1e-3).all()
    torch.testing.assert_close(model(IDS_A).logits, base, rtol=0, atol=0)


class _KwargBlock(torch.nn.Module):
    """A block called with ``hidden_states=`` as a keyword that returns a tuple."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, *, hidden_states: torch.Tensor, extra: int = 0):
        return (hidden_states * self.scale + extra, "aux")


def test_hooks_handle_keyword_inputs_and_tuple_outputs():
    blocks = torch.nn.ModuleList([_KwargBlock(2.0), _KwargBlock(3.0)])

    def run(x: torch.Tensor) -> tuple:
        for block in blocks:
            out = block(hidden_states=x, extra=1)
            assert out[1] == "aux"
            x = out[0]
        return x

    x = torch.ones(1, 2, 4)
    with capture_residual(blocks) as captured:
        y = run(x)
    assert [c[0, 0, 0].item() for c in captured] == [1.0, 3.0, 10.0]
    torch.testing.assert_close(captured[-1], y)
    with patch_residual(blocks[0], lambda h: h * 0):
        assert run(x)[0, 0, 0].item() == 1.0
    with add_to_residual(blocks[1], torch.full((4,), 5.0), positions=slice(0, 1)):
        z = run(x)
    assert z[0, :, 0].tolist() == [15.0, 10.0]


def test_patch_rejects_wrong_shape(loaded):
    model = loaded("gpt2")
    with (
        patch_residual(residual_blocks(model)[0], lambda h: h[:, :1]),
        pytest.raises(ValueError, match="must return a tensor of shape"),
    ):
        model(IDS_A)


def test_capture_needs_blocks():
    with pytest.raises(ValueError, match="at least one block"), capture_residual([]):
        pass

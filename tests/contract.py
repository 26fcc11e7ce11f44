"""Checks of the model contract (DESIGN.md) shared by every model's tests."""

import torch


def run_steps(model, state, tokens):
    """Feed None, x_0, ..., x_{T-2} through `step`: logits (B, T, V) for x_0 .. x_{T-1}."""
    logits, previous = [], None
    for t in range(tokens.shape[1]):
        out, state = model.step(state, previous)
        logits.append(out)
        previous = tokens[:, t]
    return torch.stack(logits, 1), state


def assert_reorder_continues(model, state, prefix, suffix, expected, index):
    """After `prefix` (B, P) has been stepped into `state`, reorder the rows by `index` and step on
    with `suffix` (B, S): row i must reproduce `expected[index[i]]`, the parallel logits (B, S, V)
    of the suffix positions; fewer rows work too, and the original state is left untouched."""
    reordered = model.reorder(state, index)
    # Continue each new row with the tokens of the row it copies: it must match that row exactly.
    logits, previous = [], prefix[index, -1]
    for t in range(suffix.shape[1]):
        out, reordered = model.step(reordered, previous)
        logits.append(out)
        previous = suffix[index, t]
    torch.testing.assert_close(torch.stack(logits, 1), expected[index], rtol=0, atol=1e-4)
    kept = model.reorder(state, torch.tensor([1]))
    out, _ = model.step(kept, prefix[1:2, -1])
    torch.testing.assert_close(out, expected[1:2, 0], rtol=0, atol=1e-4)
    out, _ = model.step(state, prefix[:, -1])
    torch.testing.assert_close(out, expected[:, 0], rtol=0, atol=1e-4)

"""FVSBN, NADE and MADE: parameter counts, the autoregressive property by perturbation (every
ordering), step == forward, the NADE recursion against its definition, likelihoods that sum to 1
over all 512 images of a 3x3 model, and exact completion in a known-first ordering."""

import itertools
import math

import pytest
import torch
from contract import assert_reorder_continues, run_steps

from arcli.decoding import Known, generate
from arcli.image.contract import mixture_nats, token_nats
from arcli.models.fvsbn import FVSBN, FVSBNConfig
from arcli.models.made import MADE, MADEConfig, draw_orderings, masks
from arcli.models.nade import NADE, NADEConfig
from arcli.registry import get_family

H, W = 3, 3
N = H * W
ALL_IMAGES = torch.tensor(list(itertools.product([0, 1], repeat=N)))  # (512, 9)


def randomised(model, seed=0):
    """Random weights everywhere (zero-initialised biases and label embeddings included), float64."""
    generator = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    return model.eval()


def build(kind, num_classes=0, **extra):
    if kind == "fvsbn":
        return randomised(FVSBN(FVSBNConfig(height=H, width=W, num_classes=num_classes)))
    if kind == "nade":
        return randomised(NADE(NADEConfig(height=H, width=W, hidden=5, num_classes=num_classes)))
    config = MADEConfig(height=H, width=W, num_classes=num_classes, **{"hidden": [7, 6], "orderings": 3, **extra})
    return randomised(MADE(config))


KINDS = ["fvsbn", "nade", "made"]


def random_images(count, seed):
    return torch.randint(0, 2, (count, N), generator=torch.Generator().manual_seed(seed))


def test_fvsbn_has_n_n_plus_1_over_2_parameters():
    for height, width in ((3, 3), (28, 28), (2, 5)):
        n = height * width
        model = FVSBN(FVSBNConfig(height=height, width=width))
        assert sum(p.numel() for p in model.parameters()) == n * (n + 1) // 2
    assert sum(p.numel() for p in FVSBN(FVSBNConfig()).parameters()) == 307_720  # 784 * 785 / 2


def test_nade_and_made_parameter_counts():
    assert sum(p.numel() for p in NADE(NADEConfig(height=H, width=W, hidden=5)).parameters()) == 2 * 5 * 9 + 5 + 9
    made = MADE(MADEConfig(height=H, width=W, hidden=[7, 6]))
    assert sum(p.numel() for p in made.parameters()) == (9 * 7 + 7) + (7 * 6 + 6) + (6 * 9 + 9)


def test_fvsbn_logits_by_hand():
    """Pixel 2's logit is b_2 + W_20 x_0 + W_21 x_1: the packed weights go row by row."""
    model = FVSBN(FVSBNConfig(height=1, width=3))
    with torch.no_grad():
        model.weight.copy_(torch.tensor([0.5, -1.0, 2.0]))  # W_10, W_20, W_21
        model.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    logits = model(torch.tensor([[1, 1, 0]]))
    torch.testing.assert_close(logits[0, :, 1], torch.tensor([0.1, 0.2 + 0.5, 0.3 - 1.0 + 2.0]))
    assert torch.equal(logits[..., 0], torch.zeros(1, 3))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_classes", [0, 2])
def test_likelihoods_sum_to_one_over_all_512_images(kind, num_classes):
    model = build(kind, num_classes)
    labels = None if num_classes == 0 else torch.ones(len(ALL_IMAGES), dtype=torch.long)
    with torch.no_grad():
        if kind == "made":
            for k in range(model.orderings):
                nats = token_nats(model, ALL_IMAGES, labels, ordering=k).sum(1)
                assert math.isclose(float(torch.exp(-nats).sum()), 1.0, rel_tol=1e-9), k
        nats, _ = mixture_nats(model, ALL_IMAGES, labels)
        assert math.isclose(float(torch.exp(-nats).sum()), 1.0, rel_tol=1e-9)


def changed_outputs(model, images, **kwargs):
    """(n, n) bool: [d, e] is True when flipping input pixel d changes the logit of pixel e, in any image."""
    changed = torch.zeros(N, N, dtype=torch.bool)
    with torch.no_grad():
        for image in images:
            base = model(image[None], **kwargs)[0, :, 1]
            flipped = image.repeat(N, 1)
            flipped[torch.arange(N), torch.arange(N)] ^= 1  # row d flips pixel d
            changed |= (model(flipped, **kwargs)[:, :, 1] - base).abs() > 1e-9  # batch sizes may round differently
    return changed


@pytest.mark.parametrize("kind", ["fvsbn", "nade"])
def test_autoregressive_property_in_raster_order(kind):
    changed = changed_outputs(build(kind), random_images(8, 1))
    assert not changed.tril().any()  # pixel d informs no logit at or before d ...
    assert changed[torch.ones(N, N, dtype=torch.bool).triu(1)].all()  # ... and every logit after it


def test_made_autoregressive_property_for_every_ordering():
    model = build("made", orderings=4)
    for k in range(model.orderings):
        order = model.order[k]
        rank = torch.argsort(order)  # rank[d]: pixel d's position in ordering k
        changed = changed_outputs(model, random_images(8, 1), ordering=k)
        may = rank[None, :] > rank[:, None]  # [d, e]: e comes after d in ordering k
        assert not (changed & ~may).any(), f"ordering {k}: an output saw an input at or after it"
        assert changed.any()
    assert torch.equal(model.order[0], torch.arange(N))  # the first ordering is raster order
    assert len({tuple(o.tolist()) for o in model.order}) == 4


def test_made_masks_by_hand():
    """Ordering (2, 0, 1): ranks m = (2, 3, 1); one layer of degrees (1, 2)."""
    ordering = draw_orderings(1, 3, [2], 0)[0]._replace(order=torch.tensor([2, 0, 1]), degrees=[torch.tensor([1, 2])])
    first, out = masks(ordering, 3)
    assert first.tolist() == [[0, 0, 1], [1, 0, 1]]  # unit of degree 1 sees pixel 2 (rank 1); degree 2 also pixel 0
    assert out.tolist() == [[1, 0], [1, 1], [0, 0]]  # pixel 0 (rank 2) sees degree 1; pixel 1 (rank 3) both; pixel 2 none


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_classes", [0, 3])
def test_step_matches_forward(kind, num_classes):
    model = build(kind, num_classes)
    tokens = random_images(4, 2)
    labels = None if num_classes == 0 else torch.tensor([0, 2, 1, 2])
    logits, state = run_steps(model, model.start(4, labels), tokens)
    torch.testing.assert_close(logits, model(tokens, labels), rtol=0, atol=1e-10)
    index = torch.tensor([2, 0, 0])
    prefix_state = run_steps(model, model.start(4, labels), tokens[:, :4])[1]
    assert_reorder_continues(model, prefix_state, tokens[:, :4], tokens[:, 4:], model(tokens, labels)[:, 4:], index)


def test_made_step_matches_forward_in_every_ordering():
    model = build("made", 2, orderings=3)
    tokens, labels = random_images(3, 4), torch.tensor([1, 0, 1])
    for which in [0, 1, 2, torch.tensor([4, 0, 8, 1, 7, 2, 6, 3, 5])]:
        view = model.in_order(which)
        ordered = view.from_raster(tokens)
        logits, _ = run_steps(view, view.start(3, labels), ordered)
        torch.testing.assert_close(logits, view(ordered, labels), rtol=0, atol=1e-10)
        assert torch.equal(view.to_raster(ordered), tokens)


def test_nade_recursion_matches_the_naive_definition():
    model = build("nade", 2)
    tokens, labels = random_images(5, 3), torch.tensor([0, 1, 1, 0, 1])
    naive = model.naive_logits(tokens, labels)
    torch.testing.assert_close(model(tokens, labels), naive, rtol=0, atol=1e-10)
    torch.testing.assert_close(run_steps(model, model.start(5, labels), tokens)[0], naive, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_labels_change_the_logits_and_bad_labels_are_refused(kind):
    model = build(kind, 2)
    tokens = random_images(2, 5)
    assert not torch.equal(model(tokens, torch.tensor([0, 0])), model(tokens, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="class-conditional"):
        model(tokens)
    with pytest.raises(ValueError, match="lie in"):
        model(tokens, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        build(kind)(tokens, torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="0 or 1"):
        model(tokens * 2, torch.tensor([0, 0]))


def test_configs_refuse_bad_values():
    for bad in ({"orderings": 0}, {"hidden": []}, {"hidden": [0]}, {"height": 1, "width": 1}):
        with pytest.raises(ValueError):
            MADEConfig(**bad)
    with pytest.raises(ValueError):
        NADEConfig(hidden=0)


def test_registry_builds_and_refuses_orderings_0():
    made = get_family("made")
    assert made.config(overrides={"orderings": "4", "hidden": "[8, 8]"}).hidden == [8, 8]
    with pytest.raises(ValueError, match="orderings must be >= 1"):
        made.config(overrides={"orderings": "0"})
    for name in ("fvsbn", "nade", "made"):
        assert get_family(name).modality == "image"


def test_known_first_ordering_completes_exactly():
    """Generating in an ordering whose first positions are the known pixels draws the hidden ones
    from p(hidden | known) of that ordering's model: the engine's frequencies over 4,000 draws match
    the brute-force conditional computed from the 512-image table."""
    model = build("made")
    known = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0, 1], dtype=torch.bool)  # 5 known, 4 hidden pixels
    values = torch.tensor([1, 0, 0, 1, 0, 0, 0, 0, 1])
    order = torch.cat([known.nonzero()[:, 0], (~known).nonzero()[:, 0]])
    view = model.in_order(order)
    rows = generate(view, "sample", max_length=N, batch_size=4000, seed=0,
                    known=Known(view.from_raster(values[None]).expand(4000, -1), view.from_raster(known[None]).expand(4000, -1)))
    drawn = view.to_raster(torch.tensor([r[0].tokens for r in rows]))
    assert torch.equal(drawn[:, known], values[known].expand(4000, -1))
    with torch.no_grad():
        nats = token_nats(model, ALL_IMAGES, None, ordering=model.ordering(order)).sum(1)
    fits = (ALL_IMAGES[:, known] == values[known]).all(1)
    p = torch.exp(-nats[fits]) / torch.exp(-nats[fits]).sum()  # p(hidden | known): 16 completions
    counts = torch.tensor([(drawn == image).all(1).sum() for image in ALL_IMAGES[fits]], dtype=torch.float64) / 4000
    assert float((counts - p).abs().max()) < 0.03
    logprob = torch.tensor([r[0].logprob for r in rows[:5]], dtype=torch.float64)
    torch.testing.assert_close(logprob, -nats[[int((ALL_IMAGES == d).all(1).nonzero()) for d in drawn[:5]]])


def test_order_agnostic_training_draws_a_new_ordering_per_batch_repeatably():
    config = MADEConfig(height=H, width=W, hidden=[7], orderings=2, order_agnostic=True)
    draws = [config.training_ordering(torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(draws[0].order, draws[1].order) and torch.equal(draws[0].degrees[0], draws[1].degrees[0])
    generator = torch.Generator().manual_seed(5)
    orders = {tuple(config.training_ordering(generator).order.tolist()) for _ in range(20)}
    assert len(orders) == 20  # 9! orderings: 20 draws differ
    model = randomised(MADE(config))
    changed = changed_outputs(model, random_images(8, 1), ordering=draws[0])
    rank = torch.argsort(draws[0].order)
    assert not (changed & ~(rank[None, :] > rank[:, None])).any()
    assert MADEConfig(orderings=3).training_ordering(generator) in (0, 1, 2)
    assert MADEConfig().training_ordering(generator) is None  # one ordering: the model's own

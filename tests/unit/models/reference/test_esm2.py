"""ESM-2: alphabet, equality with fair-esm's own forward, checkpoint reading and its errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import esm
import pytest
import torch

from virnucpro.errors import ModelLoadError
from virnucpro.models.reference.esm2 import (
    ESM2_T36_3B_UR50D,
    Esm2Spec,
    ProteinAlphabet,
    build_random_esm2,
    load_esm2,
    read_esm2_checkpoint,
)

CPU = torch.device("cpu")
PROTEINS = ["MKTAYIAKQRQISFVKSHFSRQ", "MLV", "ACDEFGHIKLMNPQRSTVWYACDEFGHIKLMNPQRSTVWY" * 2, "MKW"]


def _read(path: Path) -> dict:  # type: ignore[type-arg]
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, weights_only=True)


def _fair_esm_model(checkpoint: Path) -> torch.nn.Module:
    regression = checkpoint.with_name(f"{checkpoint.stem}-contact-regression.pt")
    model, _ = esm.pretrained.load_model_and_alphabet_core(
        "esm2_t36_3B_UR50D", _read(checkpoint), _read(regression)
    )
    return model.eval()


def test_alphabet_equals_fair_esm() -> None:
    ours, theirs = ProteinAlphabet(), esm.data.Alphabet.from_architecture("ESM-1b")
    assert list(ours.tokens) == theirs.all_toks and len(ours) == 33
    assert (ours.cls_idx, ours.padding_idx, ours.eos_idx, ours.unk_idx, ours.mask_idx) == (
        theirs.cls_idx, theirs.padding_idx, theirs.eos_idx, theirs.unk_idx, theirs.mask_idx,
    )  # fmt: skip
    for protein in PROTEINS + ["MXBZUO"]:
        assert ours.encode(protein) == [theirs.cls_idx, *theirs.encode(protein), theirs.eos_idx]


def test_encoder_equals_fair_esm_forward(demo_esm_checkpoint: Path) -> None:
    """Padded batch with a <mask> token (token-dropout rescaling) against fair-esm ``ESM2``."""
    reference = _fair_esm_model(demo_esm_checkpoint)
    ours = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    converter = reference.alphabet.get_batch_converter()
    _, _, tokens = converter([(str(i), p) for i, p in enumerate(PROTEINS)])
    tokens[0, 5] = reference.alphabet.mask_idx
    layers = reference.num_layers
    with torch.inference_mode():
        expected = reference(tokens, repr_layers=[layers])["representations"][layers]
        got = ours(tokens)
    not_pad = tokens.ne(reference.alphabet.padding_idx)
    assert float((got - expected).abs()[not_pad].max()) < 1e-5
    with torch.inference_mode():  # and without padding (fair-esm then passes no mask)
        single = ours(tokens[1:2, : len(PROTEINS[1]) + 2])
        expected_single = reference(tokens[1:2, : len(PROTEINS[1]) + 2], repr_layers=[layers])
    assert float((single - expected_single["representations"][layers]).abs().max()) < 1e-5


def test_encoder_equals_fair_esm_on_random_multi_head_model(tmp_path: Path) -> None:
    from virnucpro.models.demo import write_esm2_checkpoint

    spec = Esm2Spec("esm2_t3_tiny", num_layers=3, embed_dim=40, attention_heads=5)
    path = write_esm2_checkpoint(tmp_path / "esm2_t3_tiny.pt", spec, seed=7)
    reference = _fair_esm_model(path)
    ours = load_esm2(path, CPU, torch.float32)
    converter = reference.alphabet.get_batch_converter()
    _, _, tokens = converter([(str(i), p) for i, p in enumerate(PROTEINS)])
    with torch.inference_mode():
        expected = reference(tokens, repr_layers=[3])["representations"][3]
        got = ours(tokens)
    not_pad = tokens.ne(1)
    assert float((got - expected).abs()[not_pad].max()) < 1e-5
    assert ours.dim == 40


def test_checkpoint_keys_are_mapped_and_heads_dropped(demo_esm_checkpoint: Path) -> None:
    spec, state = read_esm2_checkpoint(demo_esm_checkpoint)
    shape = (spec.num_layers, spec.embed_dim, spec.attention_heads, spec.token_dropout)
    assert shape == (36, 16, 4, True)
    assert "embed_tokens.weight" in state and "layers.35.fc2.bias" in state
    assert not any(k.startswith(("encoder.", "lm_head.", "contact_head.")) for k in state)


def test_missing_inv_freq_gets_fair_esm_default(demo_esm_checkpoint: Path, tmp_path: Path) -> None:
    data = _read(demo_esm_checkpoint)
    stored = data["model"]["encoder.layers.0.self_attn.rot_emb.inv_freq"].clone()
    data["model"] = {k: v for k, v in data["model"].items() if "inv_freq" not in k}
    torch.save(data, tmp_path / "no_inv_freq.pt")
    _, state = read_esm2_checkpoint(tmp_path / "no_inv_freq.pt")
    assert torch.equal(state["layers.0.self_attn.rot_emb.inv_freq"], stored)


def test_missing_and_unexpected_keys_are_named(demo_esm_checkpoint: Path, tmp_path: Path) -> None:
    data = _read(demo_esm_checkpoint)
    del data["model"]["encoder.layers.7.fc1.weight"]
    data["model"]["encoder.layers.0.self_attn.bias_k"] = torch.zeros(1, 1, 16)
    torch.save(data, tmp_path / "broken.pt")
    with pytest.raises(ModelLoadError) as info:
        load_esm2(tmp_path / "broken.pt", CPU, torch.float32)
    assert "missing keys: layers.7.fc1.weight" in str(info.value)
    assert "unexpected keys: layers.0.self_attn.bias_k" in str(info.value)


def test_esm1_args_format_is_named(tmp_path: Path) -> None:
    torch.save({"model": {}, "args": argparse.Namespace(arch="roberta_large")}, tmp_path / "esm1b.pt")
    with pytest.raises(ModelLoadError, match="ESM-1/ESM-1b checkpoint .*needs ESM-2"):
        load_esm2(tmp_path / "esm1b.pt", CPU, torch.float32)


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {canary}",))

    torch.save({"model": {}, "cfg": {"model": Payload()}}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match=r"refused .*'(posix|os)\.system'"):
        load_esm2(tmp_path / "evil.pt", CPU, torch.float32)
    assert not canary.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError, match="junk.pt: cannot read"):
        load_esm2(tmp_path / "junk.pt", CPU, torch.float32)


def test_build_random_is_deterministic_and_shaped() -> None:
    spec = Esm2Spec("esm2_t2_tiny", num_layers=2, embed_dim=24, attention_heads=3)
    a = build_random_esm2(spec, CPU, torch.float32, seed=3)
    b = build_random_esm2(spec, CPU, torch.float32, seed=3)
    c = build_random_esm2(spec, CPU, torch.float32, seed=4)
    tokens = torch.tensor([ProteinAlphabet().encode("MKTAYIAK")])
    with torch.inference_mode():
        assert torch.equal(a(tokens), b(tokens))
        assert not torch.equal(a(tokens), c(tokens))
        assert a(tokens).shape == (1, 10, 24)


def test_full_size_spec_constants() -> None:
    spec = ESM2_T36_3B_UR50D
    assert (spec.num_layers, spec.embed_dim, spec.attention_heads) == (36, 2560, 40)
    with torch.device("meta"):
        from virnucpro.models.reference.esm2 import Esm2Encoder

        model = Esm2Encoder(ESM2_T36_3B_UR50D)
    # fair-esm's 2,839,005,634 parameters include the LM head (dense + layer norm + bias) and
    # the contact regression; the encoder alone is that minus those.
    lm_head = 2560 * 2560 + 2560 + 2 * 2560 + 33
    contact = 36 * 40 + 1
    assert sum(p.numel() for p in model.parameters()) == 2_839_005_634 - lm_head - contact


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_close_and_fp32_where_promised(
    demo_esm_checkpoint: Path, dtype: torch.dtype
) -> None:
    reference = load_esm2(demo_esm_checkpoint, CPU, torch.float32)
    model = load_esm2(demo_esm_checkpoint, CPU, dtype)
    assert model.layers[0].fc1.weight.dtype == dtype
    assert model.layers[0].final_layer_norm.weight.dtype == torch.float32
    assert model.layers[0].self_attn.rot_emb.inv_freq.dtype == torch.float32
    tokens = torch.tensor([ProteinAlphabet().encode(PROTEINS[0])])
    with torch.inference_mode():
        low, high = model(tokens), reference(tokens)
    assert low.dtype == torch.float32
    assert 0 < float((low - high).abs().max()) < 0.25

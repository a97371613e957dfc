"""DNABERT-S: slopes, key mapping, weight files, errors, batching, precision."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from virnucpro.errors import ModelLoadError
from virnucpro.models.reference.dnabert import (
    DnabertConfig,
    DnabertS,
    alibi_slopes,
    load_dnabert,
    normalize_dnabert_state,
)

CPU = torch.device("cpu")


def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(src / name, dst / name)
    return dst


def _run(model: DnabertS, ids: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in ids)
    tokens = torch.full((len(ids), width), 3, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, row in enumerate(ids):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.inference_mode():
        return model(tokens, mask)


def test_alibi_slopes_twelve_heads_keep_the_original_order() -> None:
    expected = [2.0**-k for k in range(1, 9)] + [2.0**-k for k in (0.5, 1.5, 2.5, 3.5)]
    assert alibi_slopes(12) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("heads", [1, 2, 4, 8, 16])
def test_alibi_slopes_power_of_two(heads: int) -> None:
    assert alibi_slopes(heads) == pytest.approx([2 ** (-8 * i / heads) for i in range(1, heads + 1)])


def test_attention_bias_is_alibi_plus_padding() -> None:
    with torch.device("meta"):
        model = DnabertS(DnabertConfig(hidden_size=8, num_attention_heads=4, num_hidden_layers=1))
    model.slopes = torch.tensor(alibi_slopes(4))
    bias = model.attention_bias(torch.tensor([[1, 1, 1, 0]]))
    assert bias.shape == (1, 4, 4, 4) and bias.dtype == torch.float32
    assert bias[0, 0, 0, 2].item() == pytest.approx(-0.25 * 2)
    assert bias[0, 3, 2, 0].item() == pytest.approx(-(2**-8) * 2)
    assert bias[0, 1, 0, 3].item() == pytest.approx(-10000 - 0.0625 * 3)


def test_normalize_strips_bert_prefix_and_drops_heads() -> None:
    t = torch.zeros(1)
    state = {
        "bert.embeddings.word_embeddings.weight": t,
        "bert.encoder.layer.0.mlp.wo.bias": t,
        "bert.pooler.dense.weight": t,
        "cls.predictions.bias": t,
        "cls.predictions.transform.dense.weight": t,
    }
    assert set(normalize_dnabert_state(state)) == {
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.mlp.wo.bias",
    }


def test_masked_lm_checkpoint_with_bert_prefix_loads_identically(
    demo_dnabert_dir: Path, tmp_path: Path
) -> None:
    """A ``BertForMaskedLM`` layout (``bert.`` prefix, ``cls.`` head) gives the same model."""
    state = torch.load(demo_dnabert_dir / "pytorch_model.bin", weights_only=True)
    mlm = {f"bert.{k}": v for k, v in state.items() if not k.startswith("pooler.")}
    mlm["cls.predictions.bias"] = torch.zeros(4096)
    mlm["cls.predictions.transform.dense.weight"] = torch.zeros(48, 48)
    target = _copy_without_weights(demo_dnabert_dir, tmp_path / "mlm")
    torch.save(mlm, target / "pytorch_model.bin")
    plain, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    prefixed, _ = load_dnabert(target, CPU, torch.float32)
    ids = [tokenizer.encode("ACGTTGCA" * 20)]
    assert torch.equal(_run(plain, ids), _run(prefixed, ids))


def test_missing_and_unexpected_keys_are_named(demo_dnabert_dir: Path, tmp_path: Path) -> None:
    state = torch.load(demo_dnabert_dir / "pytorch_model.bin", weights_only=True)
    del state["encoder.layer.1.mlp.wo.bias"]
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    target = _copy_without_weights(demo_dnabert_dir, tmp_path / "broken")
    torch.save(state, target / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_dnabert(target, CPU, torch.float32)
    message = str(info.value)
    assert "missing keys: encoder.layer.1.mlp.wo.bias" in message
    assert "unexpected keys: encoder.layer.0.attention.self.rotary.weight" in message
    assert str(target / "pytorch_model.bin") in message


def test_config_that_does_not_fit_the_weights_names_the_shapes(
    demo_dnabert_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "wrong_config"
    shutil.copytree(demo_dnabert_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["intermediate_size"] = 128
    (target / "config.json").write_text(json.dumps(config))
    shapes = r"encoder.layer.0.mlp.wo.weight is \(48, 96\), expected \(48, 128\)"
    with pytest.raises(ModelLoadError, match=shapes):
        load_dnabert(target, CPU, torch.float32)


def test_safetensors_weights_equal_pytorch_bin(demo_dnabert_dir: Path, tmp_path: Path) -> None:
    state = torch.load(demo_dnabert_dir / "pytorch_model.bin", weights_only=True)
    target = _copy_without_weights(demo_dnabert_dir, tmp_path / "st")
    save_file({k: v.contiguous() for k, v in state.items()}, str(target / "model.safetensors"))
    a, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    b, _ = load_dnabert(target, CPU, torch.float32)
    ids = [tokenizer.encode("GATTACA" * 30)]
    assert torch.equal(_run(a, ids), _run(b, ids))


def test_directory_without_weights_says_what_to_copy(demo_dnabert_dir: Path, tmp_path: Path) -> None:
    target = _copy_without_weights(demo_dnabert_dir, tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no DNABERT-S weights .*copy the DNABERT-S snapshot"):
        load_dnabert(target, CPU, torch.float32)


def test_pickle_with_code_is_refused(demo_dnabert_dir: Path, tmp_path: Path) -> None:
    target = _copy_without_weights(demo_dnabert_dir, tmp_path / "evil")
    canary = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {canary}",))

    torch.save({"embeddings.word_embeddings.weight": Payload()}, target / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"refused to load .*'(posix|os)\.system'"):
        load_dnabert(target, CPU, torch.float32)
    assert not canary.exists()


def test_padding_does_not_change_a_sequence_and_padded_rows_are_zero(demo_dnabert_dir: Path) -> None:
    model, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    short, long = tokenizer.encode("ACGT" * 10), tokenizer.encode("TTGACCA" * 40)
    batch = _run(model, [short, long])
    alone = _run(model, [short])
    assert torch.allclose(batch[0, : len(short)], alone[0], atol=1e-5)
    assert torch.all(batch[0, len(short) :] == 0)
    assert model.dim == 48


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_casts_linear_weights_only(demo_dnabert_dir: Path, dtype: torch.dtype) -> None:
    reference, tokenizer = load_dnabert(demo_dnabert_dir, CPU, torch.float32)
    model, _ = load_dnabert(demo_dnabert_dir, CPU, dtype)
    layer = model.encoder.layer[0]
    assert layer.attention.self.Wqkv.weight.dtype == dtype
    assert layer.mlp.gated_layers.weight.dtype == dtype
    assert layer.mlp.layernorm.weight.dtype == torch.float32
    assert model.embeddings.word_embeddings.weight.dtype == torch.float32
    ids = [tokenizer.encode("ACGTAGGCTA" * 20), tokenizer.encode("CCGTA" * 7)]
    low, high = _run(model, ids), _run(reference, ids)
    assert low.dtype == torch.float32 and bool(torch.isfinite(low).all())
    diff = float((low - high).abs().max())
    assert 0 < diff < 0.25  # the option has an effect, and a bounded one


def test_config_rejects_heads_that_do_not_divide_hidden() -> None:
    with pytest.raises(ModelLoadError, match="not a multiple"):
        DnabertConfig(hidden_size=50, num_attention_heads=12)
    assert math.isclose(DnabertConfig().layer_norm_eps, 1e-12)

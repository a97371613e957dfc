"""Tiny RANDOM models in the real file formats, for demos, tests and CI without the real weights.

:func:`make_demo_models` writes a directory laid out like ``$VIRNUCPRO_MODELS_DIR``:

- ``dnabert_s/``: DNABERT-S snapshot (the real ``config.json`` keys with small dimensions and
  12 heads, ``pytorch_model.bin`` in the ``BertModel`` key layout with ``pooler.*``, the real
  public tokenizer files);
- ``esm2_t36_3B_UR50D.pt`` (+ ``-contact-regression.pt``): a 36-layer, 16-dim ESM-2 in the
  fair-esm hub checkpoint format, loadable by fair-esm itself;
- ``{300,500}_model.pth`` (original-style whole-module pickles of ``__main__.MLPClassifier``)
  and ``{300,500}_model.safetensors`` (the project's format);
- ``DEMO_MODELS.json``: the marker saying these weights are random and calls are meaningless.

Everything is a function of ``seed``. The same builders make the test fixtures.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from virnucpro.models.demo_marker import DEMO_MARKER, is_demo_model
from virnucpro.models.reference.classifier import MLPClassifier, save_classifier
from virnucpro.models.reference.dnabert import DnabertConfig, DnabertS
from virnucpro.models.reference.esm2 import Esm2Encoder, Esm2Spec
from virnucpro.models.reference.weights import random_state

__all__ = [
    "DemoModels",
    "DEMO_MARKER",
    "DEMO_DNABERT_CONFIG",
    "DEMO_ESM_SPEC",
    "make_demo_models",
    "is_demo_model",
    "write_dnabert_dir",
    "write_esm2_checkpoint",
    "random_classifier",
    "write_original_classifier",
]

DEMO_DNABERT_CONFIG = DnabertConfig(
    hidden_size=48, num_hidden_layers=2, num_attention_heads=12, intermediate_size=96
)
DEMO_ESM_SPEC = Esm2Spec("esm2_t36_3B_UR50D", num_layers=36, embed_dim=16, attention_heads=4)
_CHUNK_LENGTHS = (300, 500)
_CLASSIFIER_HIDDEN = 16

# The real DNABERT-S config.json (zhihan1996/DNABERT-S); the dimension fields are filled in.
_DNABERT_CONFIG_TEMPLATE: dict[str, object] = {
    "_name_or_path": "zhihan1996/DNABERT-2-117M",
    "alibi_starting_size": 512,
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_bert.BertConfig",
        "AutoModel": "bert_layers.BertModel",
        "AutoModelForMaskedLM": "bert_layers.BertForMaskedLM",
        "AutoModelForSequenceClassification": "bert_layers.BertForSequenceClassification",
    },
    "classifier_dropout": None,
    "gradient_checkpointing": False,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "initializer_range": 0.02,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
    "transformers_version": "4.28.0",
    "use_cache": True,
}
_TOKENIZER_FILES = {
    "tokenizer.json": "dnabert_tokenizer.json",
    "special_tokens_map.json": "dnabert_special_tokens_map.json",
    "tokenizer_config.json": "dnabert_tokenizer_config.json",
}


@dataclass(frozen=True, slots=True)
class DemoModels:
    """Paths of one demo model set (``root`` also works as ``$VIRNUCPRO_MODELS_DIR``)."""

    root: Path
    dnabert: Path
    esm: Path
    classifiers: dict[int, Path]  # chunk length -> original-style pickle
    classifiers_safetensors: dict[int, Path]

    def classifier(self, chunk_length: int) -> Path:
        return self.classifiers[chunk_length]

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every model path of the set: DNABERT-S, ESM-2, the pickles, the safetensors."""
        return (self.dnabert, self.esm, *self.classifiers.values(),
                *self.classifiers_safetensors.values())


def write_dnabert_dir(out_dir: Path, config: DnabertConfig, seed: int) -> Path:
    """A DNABERT-S snapshot directory with random weights (``BertModel`` layout, real tokenizer)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = DnabertS(config)
    state = random_state(model, seed)
    state["embeddings.word_embeddings.weight"][0] = 0.0  # pad_token_id 0, as BertModel keeps it
    generator = torch.Generator().manual_seed(seed + 1)
    h = config.hidden_size
    state["pooler.dense.weight"] = torch.randn(h, h, generator=generator) * h**-0.5
    state["pooler.dense.bias"] = 0.1 * torch.randn(h, generator=generator)
    torch.save(state, out_dir / "pytorch_model.bin")
    raw = {**_DNABERT_CONFIG_TEMPLATE, **config.to_json_dict()}
    (out_dir / "config.json").write_text(json.dumps(dict(sorted(raw.items())), indent=4) + "\n")
    data = resources.files("virnucpro").joinpath("data")
    for name, packaged in _TOKENIZER_FILES.items():
        (out_dir / name).write_bytes(data.joinpath(packaged).read_bytes())
    return out_dir


def write_esm2_checkpoint(path: Path, spec: Esm2Spec, seed: int) -> Path:
    """A fair-esm hub checkpoint (``{"model": {"encoder.…"}, "cfg": {"model": Namespace}}``).

    Holds every key fair-esm's ``ESM2`` expects (LM head included, tied to the embeddings);
    the contact-regression weights go to ``<stem>-contact-regression.pt`` beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        model = Esm2Encoder(spec)
    state = random_state(model, seed)
    head_dim = spec.embed_dim // spec.attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for name in state:
        if name.endswith("rot_emb.inv_freq"):
            state[name] = inv_freq.clone()
    generator = torch.Generator().manual_seed(seed + 1)
    d, vocab = spec.embed_dim, len(model.alphabet)
    state["lm_head.weight"] = state["embed_tokens.weight"]
    state["lm_head.bias"] = torch.zeros(vocab)
    state["lm_head.dense.weight"] = torch.randn(d, d, generator=generator) * d**-0.5
    state["lm_head.dense.bias"] = torch.zeros(d)
    state["lm_head.layer_norm.weight"] = torch.ones(d)
    state["lm_head.layer_norm.bias"] = torch.zeros(d)
    cfg = argparse.Namespace(
        encoder_layers=spec.num_layers,
        encoder_embed_dim=spec.embed_dim,
        encoder_attention_heads=spec.attention_heads,
        token_dropout=spec.token_dropout,
    )
    encoder = {f"encoder.{k}": v for k, v in state.items()}
    torch.save({"model": encoder, "cfg": {"model": cfg}}, path)
    regression = {
        "contact_head.regression.weight": torch.randn(
            1, spec.num_layers * spec.attention_heads, generator=generator
        ),
        "contact_head.regression.bias": torch.zeros(1),
    }
    torch.save({"model": regression}, path.with_name(f"{path.stem}-contact-regression.pt"))
    return path


def random_classifier(input_dim: int, hidden_dim: int, seed: int) -> MLPClassifier:
    """An :class:`MLPClassifier` with random weights and trained-looking BatchNorm statistics."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    model = MLPClassifier(input_dim, hidden_dim, 2)
    state = {
        "hidden_layer.weight": normal(hidden_dim, input_dim) * input_dim**-0.5,
        "hidden_layer.bias": 0.1 * normal(hidden_dim),
        "bn1.weight": 1.0 + 0.25 * normal(hidden_dim),
        "bn1.bias": 0.25 * normal(hidden_dim),
        "bn1.running_mean": 0.5 * normal(hidden_dim),
        "bn1.running_var": 0.5 + 1.5 * torch.rand(hidden_dim, generator=generator),
        "bn1.num_batches_tracked": torch.tensor(1000),
        "output_layer.weight": normal(2, hidden_dim) * hidden_dim**-0.5,
        "output_layer.bias": 0.1 * normal(2),
    }
    model.load_state_dict(state)
    return model.eval()


def write_original_classifier(model: MLPClassifier, path: Path) -> Path:
    """Save ``model`` as the original does: ``torch.save`` of a whole ``__main__.MLPClassifier``.

    ``__main__`` gets a class of that name only while saving (pickle checks it is findable).
    """
    main = sys.modules["__main__"]
    shell = type("MLPClassifier", (MLPClassifier,), {"__module__": "__main__"})
    missing = object()
    previous = getattr(main, "MLPClassifier", missing)
    original_class = model.__class__
    setattr(main, "MLPClassifier", shell)
    try:
        model.__class__ = shell
        model.train()  # train.py saves the model in train mode
        torch.save(model, path)
    finally:
        model.__class__ = original_class
        model.eval()
        if previous is missing:
            delattr(main, "MLPClassifier")
        else:
            setattr(main, "MLPClassifier", previous)
    return path


def make_demo_models(out_dir: Path, seed: int = 0) -> DemoModels:
    """Write the demo model set to ``out_dir`` (created if needed) and return its paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dnabert = write_dnabert_dir(out_dir / "dnabert_s", DEMO_DNABERT_CONFIG, seed)
    esm = write_esm2_checkpoint(out_dir / f"{DEMO_ESM_SPEC.name}.pt", DEMO_ESM_SPEC, seed + 10)
    input_dim = DEMO_DNABERT_CONFIG.hidden_size + DEMO_ESM_SPEC.embed_dim
    pickles: dict[int, Path] = {}
    safetensors: dict[int, Path] = {}
    for offset, length in enumerate(_CHUNK_LENGTHS):
        model = random_classifier(input_dim, _CLASSIFIER_HIDDEN, seed + 20 + offset)
        pickles[length] = write_original_classifier(model, out_dir / f"{length}_model.pth")
        safetensors[length] = out_dir / f"{length}_model.safetensors"
        save_classifier(model, safetensors[length])
    files = sorted(
        str(p.relative_to(out_dir))
        for p in [dnabert, esm, *pickles.values(), *safetensors.values()]
    )
    marker = {
        "demo": True,
        "warning": "These are tiny RANDOM-weight models with the real architectures and file "
        "formats, for demonstrations and tests. Their predictions are meaningless.",
        "seed": seed,
        "files": files,
    }
    (out_dir / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return DemoModels(out_dir, dnabert, esm, pickles, safetensors)



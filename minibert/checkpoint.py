"""Hugging Face BERT checkpoint folders in and out.

A folder holds `config.json`, the weights (`model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin`), and the tokenizer files. Names are
translated by one table; every key of a checkpoint is accounted for: consumed, dropped on
purpose, or reported. A Hugging Face name instead of a folder means its snapshot in the local
Hugging Face cache (`files.find_model`, never the network).

Generic over model classes: a class is built as `cls(config)`, saved under its own name in
`architectures`, and says by its `key_prefix` attribute how its parameter names relate to the
table's. This module never imports model.py (model.py imports it).
"""

from __future__ import annotations

import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import BertConfig
from .files import find_model, read_json, replace_atomically

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

# Hugging Face name -> minibert name. `{}` is the layer index. A (name, i) pair is the i-th third
# of our fused QKV projection. None: a key dropped on purpose.
KEY_TABLE: dict[str, str | tuple[str, int] | None] = {
    "bert.embeddings.word_embeddings.weight": "bert.embeddings.word.weight",
    "bert.embeddings.position_embeddings.weight": "bert.embeddings.position.weight",
    "bert.embeddings.token_type_embeddings.weight": "bert.embeddings.token_type.weight",
    "bert.embeddings.LayerNorm.weight": "bert.embeddings.norm.weight",
    "bert.embeddings.LayerNorm.bias": "bert.embeddings.norm.bias",
    "bert.embeddings.position_ids": None,  # a buffer of 0..T-1 that older versions saved
    "bert.encoder.layer.{}.attention.self.query.weight": ("bert.layers.{}.attn.qkv.weight", 0),
    "bert.encoder.layer.{}.attention.self.query.bias": ("bert.layers.{}.attn.qkv.bias", 0),
    "bert.encoder.layer.{}.attention.self.key.weight": ("bert.layers.{}.attn.qkv.weight", 1),
    "bert.encoder.layer.{}.attention.self.key.bias": ("bert.layers.{}.attn.qkv.bias", 1),
    "bert.encoder.layer.{}.attention.self.value.weight": ("bert.layers.{}.attn.qkv.weight", 2),
    "bert.encoder.layer.{}.attention.self.value.bias": ("bert.layers.{}.attn.qkv.bias", 2),
    "bert.encoder.layer.{}.attention.output.dense.weight": "bert.layers.{}.attn.proj.weight",
    "bert.encoder.layer.{}.attention.output.dense.bias": "bert.layers.{}.attn.proj.bias",
    "bert.encoder.layer.{}.attention.output.LayerNorm.weight": "bert.layers.{}.attn_norm.weight",
    "bert.encoder.layer.{}.attention.output.LayerNorm.bias": "bert.layers.{}.attn_norm.bias",
    "bert.encoder.layer.{}.intermediate.dense.weight": "bert.layers.{}.ffn.up.weight",
    "bert.encoder.layer.{}.intermediate.dense.bias": "bert.layers.{}.ffn.up.bias",
    "bert.encoder.layer.{}.output.dense.weight": "bert.layers.{}.ffn.down.weight",
    "bert.encoder.layer.{}.output.dense.bias": "bert.layers.{}.ffn.down.bias",
    "bert.encoder.layer.{}.output.LayerNorm.weight": "bert.layers.{}.ffn_norm.weight",
    "bert.encoder.layer.{}.output.LayerNorm.bias": "bert.layers.{}.ffn_norm.bias",
    "bert.pooler.dense.weight": "bert.pooler.weight",
    "bert.pooler.dense.bias": "bert.pooler.bias",
    "cls.predictions.transform.dense.weight": "head.dense.weight",
    "cls.predictions.transform.dense.bias": "head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "head.norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "head.norm.bias",
    "cls.predictions.bias": "head.bias",
    "cls.predictions.decoder.weight": None,  # tied to the word embeddings
    "cls.predictions.decoder.bias": None,  # the same tensor as cls.predictions.bias
    "cls.seq_relationship.weight": None,  # next-sentence head, which minibert does not train
    "cls.seq_relationship.bias": None,
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
    "crf.transitions": "crf.transitions",  # a tagger's CRF layer (model.CRF); transformers has none
    "crf.start_transitions": "crf.start_transitions",
    "crf.end_transitions": "crf.end_transitions",
}

# Parameters a model may be missing from a checkpoint because they are new for the task: they
# keep their fresh initialisation, with a warning. Any other missing parameter is an error.
NEW_HEAD_PREFIXES = ("head.", "classifier.", "bert.pooler.", "crf.")

class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file or key."""


@dataclass
class LoadReport:
    new: list[str] = field(default_factory=list)  # our parameters freshly initialised
    unused: list[str] = field(default_factory=list)  # checkpoint keys for another task's head


def _compile_table() -> list[tuple[re.Pattern, str | tuple[str, int] | None]]:
    rows = []
    for hf, ours in KEY_TABLE.items():
        rows.append((re.compile(re.escape(hf).replace(r"\{\}", r"(\d+)") + "$"), ours))
    return rows


_TABLE = _compile_table()


def _hf_to_ours(hf_key: str) -> tuple[bool, str | tuple[str, int] | None]:
    """-> (known, our name). Unknown keys return (False, None)."""
    for pattern, ours in _TABLE:
        m = pattern.match(hf_key)
        if m:
            if ours is None:
                return True, None
            idx = m.groups()
            if isinstance(ours, tuple):
                return True, (ours[0].format(*idx), ours[1])
            return True, ours.format(*idx)
    return False, None


def _normalise_hf_key(key: str) -> str:
    """Legacy and prefix-less spellings -> the canonical `bert.`-prefixed HF name."""
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
    key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
    if key.startswith(("embeddings.", "encoder.", "pooler.")):  # saved from a bare BertModel
        key = "bert." + key
    return key


# ----------------------------------------------------------------------------- reading weights


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The raw tensors of a checkpoint folder, by their names in the file."""
    folder = Path(folder)
    if (folder / SAFETENSORS_NAME).is_file():
        return _load_safetensors(folder / SAFETENSORS_NAME)
    for index_name, loader in ((SAFETENSORS_INDEX, _load_safetensors), (BIN_INDEX, _load_bin)):
        if (folder / index_name).is_file():
            index = folder / index_name
            weight_map = read_json(index, "shard index is ", CheckpointError)
            if not isinstance(weight_map, dict) or not isinstance(weight_map.get("weight_map"), dict):
                raise CheckpointError(f"{index}: not a valid shard index (no 'weight_map' object)")
            weight_map = weight_map["weight_map"]
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                if not (folder / shard).is_file():
                    raise CheckpointError(f"{index}: shard {shard} is missing from {folder}")
                state.update(loader(folder / shard))
            return state
    if (folder / BIN_NAME).is_file():
        return _load_bin(folder / BIN_NAME)
    raise CheckpointError(
        f"{folder}: no weights found; expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX} or {BIN_NAME}"
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None


def pickled_global(error: Exception) -> str | None:
    """The function or class a pickle refused by torch.load(weights_only=True) wanted to import
    (e.g. "posix.system"), or None when the refusal was about damaged bytes, not code."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    # weights_only: the unpickler builds tensors and plain containers only, never runs code.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = pickled_global(e)
        if code is None:
            raise CheckpointError(f"{path}: unreadable, the file is truncated or corrupted; copy it again") from None
        raise CheckpointError(f"{path}: refused, it would call {code} (pickled code, never run); if you trust "
                              f"its source, convert it to model.safetensors there") from None
    except Exception:  # damaged bytes make torch.load raise RuntimeError, EOFError, IndexError, ...
        raise CheckpointError(f"{path}: unreadable, the file is truncated or corrupted; copy it again") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} is a {type(state[bad[0]]).__name__}, not a tensor")
    return state


# ----------------------------------------------------------------------------- HF -> minibert


def convert_from_hf(hf_state: dict[str, torch.Tensor], model: torch.nn.Module, source: str = "checkpoint"
                    ) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Translate a Hugging Face state dict to `model`'s names, checking every key and shape."""
    prefix = model.key_prefix
    expected = {prefix + k: v for k, v in model.state_dict().items()}
    ours: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[int, torch.Tensor]] = {}
    report = LoadReport()
    unknown: list[str] = []
    normalised = {_normalise_hf_key(k): (k, v) for k, v in hf_state.items()}
    for key, (orig, tensor) in normalised.items():
        known, name = _hf_to_ours(key)
        if not known:
            unknown.append(orig)
            continue
        if name is None:
            continue
        if isinstance(name, tuple):
            qkv_parts.setdefault(name[0], {})[name[1]] = tensor
            continue
        if name not in expected:
            report.unused.append(orig)  # e.g. an MLM head when fine-tuning a classifier
            continue
        ours[name] = tensor
    # Checkpoints whose only MLM bias is the decoder's.
    if "head.bias" in expected and "head.bias" not in ours and "cls.predictions.decoder.bias" in normalised:
        ours["head.bias"] = normalised["cls.predictions.decoder.bias"][1]
    for name, parts in qkv_parts.items():
        if len(parts) != 3:
            missing = [("query", "key", "value")[i] for i in range(3) if i not in parts]
            raise CheckpointError(f"{source}: {name}: attention {', '.join(missing)} weights are missing")
        ours[name] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    if unknown:
        raise CheckpointError(
            f"{source}: unexpected key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + "; this is not a BERT checkpoint minibert knows how to read"
        )
    for name, tensor in ours.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: {_our_to_hf_name(name)} has shape {tuple(tensor.shape)} but the config "
                f"implies {tuple(expected[name].shape)}; the weights do not match config.json"
            )
    missing = [k for k in expected if k not in ours]
    fatal = [k for k in missing if not k.startswith(NEW_HEAD_PREFIXES)]
    if fatal:
        raise CheckpointError(
            f"{source}: missing weight {_our_to_hf_name(fatal[0])}"
            + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else "")
        )
    ours = {k.removeprefix(prefix): v for k, v in ours.items()}
    report.new = [k.removeprefix(prefix) for k in missing]
    return ours, report


def _our_to_hf_name(name: str) -> str:
    for hf in _hf_names_for(name):
        return hf
    return name


def _hf_names_for(name: str) -> list[str]:
    """Our name -> the HF names it is saved as (three for a fused QKV tensor)."""
    out = []
    for hf, ours in KEY_TABLE.items():
        if ours is None:
            continue
        target = ours[0] if isinstance(ours, tuple) else ours
        pattern = re.escape(target).replace(r"\{\}", r"(\d+)") + "$"
        m = re.match(pattern, name)
        if m:
            out.append(hf.format(*m.groups()))
    return out


# ----------------------------------------------------------------------------- minibert -> HF


def convert_to_hf(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return state_to_hf(model.state_dict(), model.key_prefix)


def state_to_hf(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our names -> HF names. prefix: the model class's key_prefix ("bert." for a bare BertModel,
    whose names lack it on both sides)."""
    hf: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        names = _hf_names_for(prefix + name)
        if not names:
            raise AssertionError(f"no Hugging Face name for parameter {name}")
        if len(names) == 3:  # fused QKV -> query, key, value
            for hf_name, part in zip(names, tensor.chunk(3, dim=0)):
                hf[hf_name] = part
        else:
            hf[names[0]] = tensor
    return {k.removeprefix(prefix): v for k, v in hf.items()}


# ----------------------------------------------------------------------------- folders


# A Hugging Face Hub name: NAME or ORG/NAME, of letters, digits, "-", "_" and ".".
def load_config(folder: str | Path, **overrides) -> BertConfig:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: model folder not found")
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a model folder needs config.json next to its weights")
    cfg = BertConfig.from_json(path)
    if overrides:
        cfg = BertConfig.from_dict({**cfg.to_dict(), **overrides})
    return cfg


def from_pretrained(cls: type, folder: str | Path, config: BertConfig | None = None, **overrides):
    """Build `cls` from a folder, or from a Hugging Face name in the local cache (find_model).
    Keyword overrides change config fields (e.g. id2label).

    The model is built on the CPU with its random init, then overwritten: in a fresh process that is
    faster than building on the meta device, whose first use is costly (BENCHMARKS.md).
    """
    folder = find_model(folder)
    cfg = config if config is not None else load_config(folder, **overrides)
    hf_state = read_weights(folder)
    model = cls(cfg)
    state, report = convert_from_hf(hf_state, model, source=str(folder))
    model.load_state_dict(state, strict=False)  # copies, converting fp16 checkpoints to fp32
    if report.new:
        warnings.warn(f"{folder}: newly initialised for this task: {', '.join(report.new)}", stacklevel=2)
    return model


def save_pretrained(model: torch.nn.Module, folder: str | Path, tokenizer=None,
                    dtype: torch.dtype | None = None) -> None:
    """Write config.json, model.safetensors (HF names) and the tokenizer files to `folder`.

    Each file is written under a temporary name and renamed into place, so an interrupted save
    leaves the previous file, not half of a new one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    cfg.architectures = [type(model).__name__]
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in convert_to_hf(model).items()
    }
    replace_atomically(folder / SAFETENSORS_NAME, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    replace_atomically(folder / CONFIG_NAME, cfg.to_json)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


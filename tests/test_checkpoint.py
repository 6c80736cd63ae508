"""Hugging Face checkpoint folders: a real published checkpoint, round trips, and refusals."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from conftest import TINY_SHAPE, assert_close_fp32, ids_batch, minilm_dir
from safetensors.torch import load_file, save_file

from minibert import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel
from minibert.checkpoint import CheckpointError, read_weights

TINY = dict(**TINY_SHAPE, vocab_size=90)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "BERT models read text in both directions at once.",
    "Mixed text: 三国时期的诸葛亮 was a strategist.",
    "Short",
    "Café naïve résumé, it's 2026!",
]


def test_minilm_hidden_states_match_transformers():
    transformers = pytest.importorskip("transformers")
    folder = minilm_dir()
    ref = transformers.AutoModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    ours = BertModel.from_pretrained(folder).eval()
    enc = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        r = ref(**enc).last_hidden_state
        h = ours(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    real = enc["attention_mask"].bool()
    # Six layers of width 384 through oneDNN here and MKL in transformers: hidden states up to |x| = 6
    # differ by at most 3.7 fp32 ulps of the largest on AMX and AVX2 kernels; 1e-5 of the largest is 84
    # ulps, 6e-5 here (see assert_close_fp32).
    assert_close_fp32(h[real], r[real])


def test_minilm_loads_into_task_models_with_new_heads():
    folder = minilm_dir()
    with pytest.warns(UserWarning, match="newly initialised.*classifier"):
        clf = BertForSequenceClassification.from_pretrained(folder, num_labels=3)
    assert clf.classifier.out_features == 3
    with pytest.warns(UserWarning, match="newly initialised.*head"):
        BertForMaskedLM.from_pretrained(folder)


@pytest.mark.parametrize("cls_name", ["BertForMaskedLM", "BertForSequenceClassification", "BertModel"])
def test_minibert_save_transformers_load(tmp_path, cls_name):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = BertConfig(**TINY, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    ours = {"BertForMaskedLM": BertForMaskedLM, "BertForSequenceClassification": BertForSequenceClassification,
            "BertModel": BertModel}[cls_name](cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == [cls_name] and saved["model_type"] == "bert"
    auto = {"BertForMaskedLM": transformers.AutoModelForMaskedLM,
            "BertForSequenceClassification": transformers.AutoModelForSequenceClassification,
            "BertModel": transformers.AutoModel}[cls_name]
    ref, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    ref.eval()
    ids, mask = ids_batch()
    with torch.no_grad():
        r = ref(input_ids=ids, attention_mask=mask)
        o = ours(ids, mask)
    # Outputs up to |x| = 3 through oneDNN here and MKL in transformers: at most 2.1 ulps of the largest
    # apart on AMX and AVX2 kernels; 1e-5 of the largest is 84 (see assert_close_fp32).
    if cls_name == "BertModel":
        assert_close_fp32(o, r.last_hidden_state)
    else:
        assert_close_fp32(o.logits, r.logits)
    if cls_name == "BertForSequenceClassification":
        assert ref.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_transformers_save_minibert_load_and_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ref = transformers.BertForMaskedLM(transformers.BertConfig(**TINY)).eval()
    ref.save_pretrained(tmp_path / "hf")
    ours = BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    ours.save_pretrained(tmp_path / "again")
    back = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "again").eval()
    ids, mask = ids_batch()
    with torch.no_grad():
        a, b, c = ref(input_ids=ids, attention_mask=mask).logits, ours(ids, mask).logits, back(
            input_ids=ids, attention_mask=mask).logits
    # Logits up to |x| = 0.4, at most 2 ulps of the largest apart (AMX and AVX2 kernels); 84 allowed.
    assert_close_fp32(b, a)
    assert_close_fp32(c, a)


def _mlm_folder(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(**TINY)).eval()
    model.save_pretrained(tmp_path)
    return model


def _logits(model):
    ids, mask = ids_batch()
    with torch.no_grad():
        return model(ids, mask).logits


def test_legacy_gamma_beta_and_prefixless_keys(tmp_path):
    model = _mlm_folder(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    legacy = {}
    for k, v in state.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        legacy[k] = v
    legacy["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    legacy["cls.seq_relationship.weight"] = torch.zeros(2, 32)
    (tmp_path / "model.safetensors").unlink()
    torch.save(legacy, tmp_path / "pytorch_model.bin")
    loaded = BertForMaskedLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(loaded), _logits(model))
    # the encoder alone, saved without the `bert.` prefix, loads into a bare model
    bare = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    (tmp_path / "pytorch_model.bin").unlink()
    save_file(bare, tmp_path / "model.safetensors")
    with pytest.warns(UserWarning, match="pooler"):  # an MLM checkpoint has no pooler
        enc = BertModel.from_pretrained(tmp_path).eval()
    ids, mask = ids_batch()
    with torch.no_grad():
        torch.testing.assert_close(enc(ids, mask), model.bert(ids, mask))


def test_sharded_safetensors(tmp_path):
    model = _mlm_folder(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    keys = sorted(state)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, tmp_path / name)
        weight_map.update({k: name for k in ks})
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    torch.testing.assert_close(_logits(BertForMaskedLM.from_pretrained(tmp_path).eval()), _logits(model))
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {\n  "a": }')
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json:2: shard index is not valid JSON"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_wrong_shape_names_the_key(tmp_path):
    _mlm_folder(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["bert.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(41, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"bert\.encoder\.layer\.1\.intermediate\.dense\.weight.*\(41, 32\)"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_stray_key_is_reported(tmp_path):
    _mlm_folder(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected key 'bert\.encoder\.layer\.0\.attention\.self\.rotary"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_missing_encoder_weight_is_an_error(tmp_path):
    _mlm_folder(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["bert.encoder.layer.1.output.dense.bias"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing weight bert\.encoder\.layer\.1\.output\.dense\.bias"):
        BertForMaskedLM.from_pretrained(tmp_path)


class NotATensor:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bin_with_pickled_code_is_refused(tmp_path, capsys):
    _mlm_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": NotATensor()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as e:
        read_weights(tmp_path)
    assert "must never run" not in capsys.readouterr().out
    message, path = str(e.value), str(tmp_path / "pytorch_model.bin")
    # One line that names the file, what it wanted to run and the safe fix; never weights_only=False.
    assert message.startswith(f"{path}: refused, it would call print") and "\n" not in message
    assert "safetensors" in message and "weights_only" not in message
    assert len(message.replace(path, "")) <= 200


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_damaged_bin_is_one_line_error(tmp_path, damage):
    _mlm_folder(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(64, 64)}, tmp_path / "pytorch_model.bin")
    raw = (tmp_path / "pytorch_model.bin").read_bytes()
    torch.manual_seed(0)
    bad = raw[: len(raw) // 2] if damage == "truncated" else bytes(torch.randint(0, 256, (4096,)).tolist())
    (tmp_path / "pytorch_model.bin").write_bytes(bad)
    with pytest.raises(CheckpointError) as e:
        read_weights(tmp_path)
    message = str(e.value)
    assert message == f"{tmp_path / 'pytorch_model.bin'}: unreadable, the file is truncated or corrupted; copy it again"


def test_missing_files_and_bad_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        BertForMaskedLM.from_pretrained(tmp_path / "nope")
    tmp_path.joinpath("m").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertForMaskedLM.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"hidden_size": 32,\n "vocab_size": }')
    with pytest.raises(ValueError, match=r"config.json:2: config is not valid JSON"):
        BertForMaskedLM.from_pretrained(tmp_path / "m")
    BertConfig(**TINY).to_json(tmp_path / "m" / "config.json")
    with pytest.raises(CheckpointError, match="no weights found"):
        BertForMaskedLM.from_pretrained(tmp_path / "m")


def test_config_json_round_trip_keeps_unknown_keys(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, "gradient_checkpointing": False, "id2label": {"0": "neg", "1": "pos"}}))
    cfg = BertConfig.from_json(path)
    assert cfg.id2label == {0: "neg", 1: "pos"} and cfg.label2id == {"neg": 0, "pos": 1} and cfg.num_labels == 2
    cfg.to_json(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["gradient_checkpointing"] is False and again["id2label"] == {"0": "neg", "1": "pos"}


def test_fp16_save_loads_as_fp32(tmp_path):
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(**TINY)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(tmp_path, dtype=torch.float16)
        loaded = BertForMaskedLM.from_pretrained(tmp_path)
    assert load_file(tmp_path / "model.safetensors")["cls.predictions.bias"].dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(_logits(loaded.eval()), _logits(model), atol=2e-2, rtol=0)

"""The token cache: the same features and batches as the in-memory path, found again while nothing
changed, rebuilt where damaged, resumed when killed, wide ids kept, exact resume, disjoint ranks."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, TINY_ARGS, TRAIN, call, tiny_config, vocab_tokenizer

from minibert import BertForMaskedLM, MaskedLM, MaskingCollator, Tokenizer
from minibert.data import token_cache as tc
from minibert.data.features import load_mlm_features
from minibert.data.readers import DataError
from minibert.data.sampler import LengthGroupedSampler
from minibert.trainer import TrainConfig, Trainer, list_checkpoints

ZH_VOCAB = ROOT / "vocab" / "zh.txt"
WORDS = ["诸葛", "亮", "是", "丞相", "刘备", "关羽", "张飞", "曹操", "孙权", "周瑜", "草船", "借箭", "过", "五关",
         "斩", "六将", "1998年", "新年", "讲话", "hello", "world", "[MASK]"]


@pytest.fixture(scope="module")
def zh() -> Tokenizer:
    return Tokenizer.from_vocab(ZH_VOCAB)


def write_corpus(path: Path, lines: int, seed: int = 0) -> Path:
    """Segmented lines of 1-60 words, with blank and space-only lines, CRLF endings and a BOM mixed in."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        if i % 17 == 5:
            out.append("   " if i % 2 else "")
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))))
    text = "\ufeff" + "\n".join(out[:10]) + "\r\n" + "\n".join(out[10:]) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of ~2 KB and batches of 7 lines, so a small corpus has many parts and batches."""
    monkeypatch.setattr(tc, "PART_BYTES", 2048)
    monkeypatch.setattr(tc, "PART_BATCH", 7)


def assert_same_features(mem: list[dict], mapped, whole_word_mask: bool) -> None:
    assert len(mem) == len(mapped)
    assert list(mapped.lengths) == [len(f["input_ids"]) for f in mem]
    for a, b in zip(mem, mapped, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["token_type_ids"], b["token_type_ids"])
        if whole_word_mask:  # the same partition into words, in the same order (ids may differ by gaps)
            wa, wb = np.asarray(a["word_ids"]), b["word_ids"]
            np.testing.assert_array_equal(wa < 0, wb < 0)
            np.testing.assert_array_equal(np.diff(wa[wa >= 0]) > 0, np.diff(wb[wb >= 0]) > 0)


@pytest.mark.parametrize("whole_word_mask", [False, True])
@pytest.mark.parametrize("group", [False, True])
def test_cached_features_equal_the_in_memory_ones(zh, tmp_path, small_parts, group, whole_word_mask):
    corpus = write_corpus(tmp_path / "corpus.txt", 300)
    cache = tc.TokenCache(tc.prepare_cache([corpus], zh, whole_word_mask, tmp_path / "cache"))
    assert len(cache.meta["parts"]) > 5  # blocks and lines cross part boundaries
    for max_length in (16, 40):
        mem = load_mlm_features(corpus, zh, max_length, whole_word_mask, group)
        assert_same_features(mem, tc.cached_features(cache, max_length, group, zh.cls_token_id, zh.sep_token_id),
                             whole_word_mask)


@pytest.mark.parametrize("whole_word_mask", [False, True])
def test_trainer_draws_the_same_batches_from_the_cache(zh, tmp_path, small_parts, whole_word_mask):
    corpus = write_corpus(tmp_path / "corpus.txt", 200)
    cache = tc.TokenCache(tc.prepare_cache([corpus], zh, whole_word_mask, tmp_path / "cache"))
    streams = []
    for data in (load_mlm_features(corpus, zh, 24, whole_word_mask, group=True),
                 tc.cached_features(cache, 24, True, zh.cls_token_id, zh.sep_token_id)):
        trainer = Trainer(BertForMaskedLM(tiny_config(zh.vocab_size)),
                          TrainConfig(output=str(tmp_path / "out"), batch_size=8, max_steps=1, device="cpu",
                                      progress=False), MaskedLM(), data,
                          MaskingCollator(zh, whole_word_mask=whole_word_mask, seed=3), log=lambda *_: None)
        stream = trainer.micro_batches()
        streams.append([next(stream) for _ in range(2 * len(trainer.sampler) + 3)])  # over two epochs
    for a, b in zip(*streams, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_cache_is_found_again_while_text_and_vocabulary_are_unchanged(zh, tmp_path, small_parts):
    corpus = write_corpus(tmp_path / "corpus.txt", 100)
    folder = tc.prepare_cache([corpus], zh, False, tmp_path / "cache")
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    renamed = corpus.rename(tmp_path / "renamed.txt")  # a name is not content
    os.utime(renamed, (0, 0))  # nor a date
    assert tc.prepare_cache([renamed], zh, False, tmp_path / "cache") == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # nothing was written
    # Another text, another vocabulary, whole words, or the same lines split into two files: a new cache.
    other_vocab = vocab_tokenizer(tmp_path / "v", ZH_VOCAB.read_text(encoding="utf-8").splitlines()[:-1])
    lines = renamed.read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "a.txt").write_text("".join(lines[:50]), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(lines[50:]), encoding="utf-8")
    edited = tmp_path / "edited.txt"
    edited.write_text(renamed.read_text(encoding="utf-8").replace("亮", "涛", 1), encoding="utf-8")
    others = {tc.prepare_cache([edited], zh, False, tmp_path / "cache"),
              tc.prepare_cache([renamed], other_vocab, False, tmp_path / "cache"),
              tc.prepare_cache([renamed], zh, True, tmp_path / "cache"),
              tc.prepare_cache([tmp_path / "a.txt", tmp_path / "b.txt"], zh, False, tmp_path / "cache")}
    assert folder not in others and len(others) == 4


def _arrays(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("part-*")) if not p.name.endswith(".json")}


def test_a_killed_preparation_goes_on_after_its_last_good_part(zh, tmp_path, small_parts, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt", 300)
    clean = _arrays(tc.prepare_cache([corpus], zh, True, tmp_path / "clean"))
    build, built = tc._build_part, []

    def killed_after_three(folder, k, *args):
        if len(built) == 3:
            raise KeyboardInterrupt  # as a SIGINT in the middle of part 3
        built.append(k)
        return build(folder, k, *args)

    monkeypatch.setattr(tc, "_build_part", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        tc.prepare_cache([corpus], zh, True, tmp_path / "cache")
    folder = next((tmp_path / "cache").iterdir())
    assert not (folder / tc.COMPLETE).exists() and not list(folder.glob("*.tmp"))
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("part-0000[012].*")}
    assert len(kept) == 12  # ids, lens, starts, json of parts 0-2

    built.clear()
    monkeypatch.setattr(tc, "_build_part", lambda folder, k, *args: built.append(k) or build(folder, k, *args))
    assert tc.prepare_cache([corpus], zh, True, tmp_path / "cache") == folder
    assert built[0] == 3  # parts 0-2 were kept, not tokenized again
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("part-0000[012].*")} == kept
    assert _arrays(folder) == clean


@pytest.mark.parametrize("damage", ["flip", "truncate", "record"])
def test_a_damaged_part_is_rebuilt_never_read(zh, tmp_path, small_parts, monkeypatch, damage):
    corpus = write_corpus(tmp_path / "corpus.txt", 300)
    folder = tc.prepare_cache([corpus], zh, False, tmp_path / "cache")
    clean = _arrays(folder)
    ids = folder / "part-00002.ids"
    if damage == "flip":
        data = bytearray(ids.read_bytes())
        data[5] ^= 0x40
        ids.write_bytes(bytes(data))
    elif damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-2])
    else:
        (folder / "part-00002.json").write_text("{not json", encoding="utf-8")
    built = []
    build = tc._build_part
    monkeypatch.setattr(tc, "_build_part", lambda f, k, *args: built.append(k) or build(f, k, *args))
    assert tc.prepare_cache([corpus], zh, False, tmp_path / "cache") == folder
    assert built == [2]  # that part alone
    assert _arrays(folder) == clean


def test_ids_beyond_uint16_take_uint32(tmp_path):
    assert tc.id_dtype(65_536) == np.uint16 and tc.id_dtype(65_537) == np.uint32
    words = [f"w{i}" for i in range(70_000)]
    tok = vocab_tokenizer(tmp_path / "vocab", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w0 w65530 w65531\nw69999 w65536 w1\n", encoding="utf-8")
    cache = tc.TokenCache(tc.prepare_cache([corpus], tok, False, tmp_path / "cache"))
    assert cache.meta["dtype"] == "uint32"
    lines = tc.cached_features(cache, 16, False, tok.cls_token_id, tok.sep_token_id)
    assert [f["input_ids"].tolist() for f in lines] == [[2, 5, 65535, 65536, 3], [2, 70004, 65541, 6, 3]]


def test_folders_and_several_files_are_one_corpus_in_order(zh, tmp_path):
    (tmp_path / "corpus" / "b").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("诸葛亮\n刘备\n", encoding="utf-8")
    (tmp_path / "corpus" / "b" / "c.txt").write_text("曹操\n", encoding="utf-8")
    (tmp_path / "corpus" / "notes.md").write_text("不读\n", encoding="utf-8")
    (tmp_path / "d.txt").write_text("孙权\n", encoding="utf-8")
    cache = tc.TokenCache(tc.prepare_cache([tmp_path / "corpus", tmp_path / "d.txt"], zh, False, tmp_path / "c"))
    lines = tc.cached_features(cache, 16, False, zh.cls_token_id, zh.sep_token_id)
    assert [zh.decode(f["input_ids"]).replace(" ", "") for f in lines] == ["诸葛亮", "刘备", "曹操", "孙权"]
    with pytest.raises(DataError, match="nothing: training file not found"):
        tc.corpus_files([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: the folder holds no .txt file"):
        tc.corpus_files([tmp_path / "empty"])


def test_bad_text_names_file_and_line(zh, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("诸葛亮\n刘备\n".encode() + b"\xff\xfe bad\n")
    with pytest.raises(DataError, match=r"bad.txt:3: byte 0xff is not valid UTF-8"):
        tc.prepare_cache([bad], zh, False, tmp_path / "cache")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="no texts found"):
        tc.prepare_cache([blank], zh, False, tmp_path / "cache")


def _make(zh, data, out: Path, seed: int, **kw) -> Trainer:
    torch.manual_seed(seed)
    args = dict(output=str(out), batch_size=4, lr=3e-3, warmup=2, precision="fp32", device="cpu", progress=False,
                log_every=1, seed=0)
    args.update(kw)
    return Trainer(BertForMaskedLM(tiny_config(zh.vocab_size)), TrainConfig(**args), MaskedLM(), data,
                   MaskingCollator(zh, seed=0), tokenizer=zh, log=lambda *_: None)


def test_resume_from_the_cache_is_bit_identical(zh, tmp_path, small_parts):
    corpus = write_corpus(tmp_path / "corpus.txt", 40)
    cache = tc.TokenCache(tc.prepare_cache([corpus], zh, False, tmp_path / "cache"))
    data = tc.cached_features(cache, 24, True, zh.cls_token_id, zh.sep_token_id)
    common = dict(max_steps=2 * -(-len(data) // 4) + 3, save_every=5, grad_accum=1, keep_checkpoints=9)
    full = _make(zh, data, tmp_path / "full", 0, **common)
    full.train()
    first = list_checkpoints(tmp_path / "full")[0]
    part = tmp_path / "part"
    shutil.copytree(first, part / first.name)
    resumed = _make(zh, data, part, 123, **common)
    drawn = []
    original = resumed.sampler.batches
    resumed.sampler.batches = lambda start=0: drawn.append(start) or original(start)
    resumed.train(resume=True)
    assert drawn[0] == 5  # went straight to the next batch: none replayed or skipped one by one
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("n, batch, world", [(103, 8, 2), (100, 10, 2), (37, 4, 3), (6, 4, 4)])
def test_ranks_cover_every_example_once_per_epoch(n, batch, world):
    lengths = torch.randint(3, 50, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    for epoch in (0, 1):
        shares = []
        for rank in range(world):
            s = LengthGroupedSampler(lengths, batch, seed=4, mega_batch_mult=3, num_replicas=world, rank=rank)
            s.set_epoch(epoch)
            shares.append(list(s))
            assert len(shares[-1]) == len(s)
        assert len({len(s) for s in shares}) == 1  # every rank takes as many steps
        flat = [i for share in shares for b in share for i in b]
        assert len(flat) == len(set(flat))  # no example twice
        missing = set(range(n)) - set(flat)
        # All of them, unless the epoch's last global batch had fewer examples than there are ranks.
        assert not missing if (n, batch, world) != (37, 4, 3) else len(missing) < world


def _rank_worker(rank: int, world: int, init: str, corpus: str, out: str, cache: str, vocab: str):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        tok = Tokenizer.from_vocab(vocab)
        built = []
        build = tc._build_part
        tc._build_part = lambda *a: built.append(a[1]) or build(*a)
        task = MaskedLM(group_texts=True, cache_dir=cache)
        data = task.load(tok, tiny_config(tok.vocab_size), 24, Path(corpus))
        trainer = Trainer(BertForMaskedLM(tiny_config(tok.vocab_size)),
                          TrainConfig(output=out, batch_size=4, max_steps=1, device="cpu", progress=False),
                          task, data.train, MaskingCollator(tok), log=lambda *_: None)
        seen = {}
        for epoch in (0, 1):
            trainer.sampler.set_epoch(epoch)
            seen[epoch] = [i for b in trainer.sampler for i in b]
        Path(out, f"rank{rank}.json").write_text(json.dumps({"built": built, "seen": seen, "n": len(data.train)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_one_preparation_and_split_each_epoch(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", 150)
    mp.spawn(_rank_worker, nprocs=2, args=(2, f"file://{tmp_path}/rendezvous", str(corpus), str(tmp_path),
                                           str(tmp_path / "cache"), str(ZH_VOCAB)))
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["built"] == [0] and r1["built"] == []  # rank 0 prepared, rank 1 found it ready
    for epoch in ("0", "1"):
        assert not set(r0["seen"][epoch]) & set(r1["seen"][epoch])
        assert sorted(r0["seen"][epoch] + r1["seen"][epoch]) == list(range(r0["n"]))


def test_cli_prepare_only_then_train_from_the_cache(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_corpus(corpus / "part1.txt", 60, seed=1)
    write_corpus(corpus / "part2.txt", 60, seed=2)
    cache = str(tmp_path / "cache")
    proc = call(TRAIN, "--task", "mlm", *TINY_ARGS, "--train", "corpus", "--prepare-only", "--cache-dir", cache,
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "token cache:" in proc.stdout and "2 file(s), 112 lines" in proc.stdout
    assert not (tmp_path / "output").exists()
    proc = call(TRAIN, "--task", "mlm", *TINY_ARGS, "--train", "corpus/part1.txt", "corpus/part2.txt",
                "--group-texts", "--cache-dir", cache, "--output", "out", "--max-steps", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "corpus/part1.txt, corpus/part2.txt:" in proc.stdout
    assert len(list(Path(cache).iterdir())) == 1  # the folder is these two files in this order: the same cache


@pytest.mark.parametrize("args, message", [
    (["--task", "classify", "--train", "a.txt", "b.txt"], "--train takes one file for --task classify"),
    (["--task", "classify", "--train", "corpus", "--output", "o"], "corpus: a folder; --task classify trains"),
    (["--task", "mlm", "--train", "c.jsonl", "--prepare-only"], "would be read into memory, not cached"),
    (["--task", "mlm", "--train", "a.txt", "c.jsonl", "--output", "o"], "several --train files are read through"),
    (["--task", "mlm", "--train", "a.txt", "--prepare-only", "--cache-dir", "b.txt/x"], "cannot write the token cache"),
])
def test_cli_refuses_paths_the_task_cannot_read(tmp_path, args, message):
    (tmp_path / "corpus").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("诸葛亮\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "诸葛亮"}\n', encoding="utf-8")
    proc = call(TRAIN, *TINY_ARGS, *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_split_and_packing_work_on_the_cache(zh, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", 120)
    as_jsonl = tmp_path / "corpus.jsonl"
    as_jsonl.write_text("".join(json.dumps({"text": line}, ensure_ascii=False) + "\n"
                                for line in corpus.read_text(encoding="utf-8-sig").splitlines() if line.strip()),
                        encoding="utf-8")
    cfg = tiny_config(zh.vocab_size)
    for task in (MaskedLM(cache_dir=str(tmp_path / "cache")), MaskedLM(pack=True, cache_dir=str(tmp_path / "cache"))):
        cached = task.load(zh, cfg, 24, corpus, eval_split=0.2, seed=5)
        memory = task.load(zh, cfg, 24, as_jsonl, eval_split=0.2, seed=5)
        assert "token cache" in cached.note and "token cache" not in memory.note
        for a, b in ((cached.train, memory.train), (cached.eval, memory.eval)):
            assert len(a) == len(b)
            for fa, fb in zip(a, b, strict=True):
                assert set(fa) == set(fb) - {"word_ids"}  # word ids only where whole-word masking reads them
                for k in fa:
                    np.testing.assert_array_equal(fa[k], fb[k])

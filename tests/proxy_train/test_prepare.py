import json
import os
import random
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
import zstandard

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.core.interrupt import Interrupted
from codemix.proxy_train import _parts
from codemix.proxy_train import prepare as prep
from codemix.proxy_train.prepare import PrepareConfig, builtin_domains, prepare
from codemix.proxy_train.sources import ReadOptions
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec

from ._corpus import PAPER_MAP, SETS, _cfg, _docs, _same_store, _slim, _stack


def _corpus(root: Path, n: int = 40) -> dict[str, tuple[str, ...]]:
    (root / "web").mkdir(parents=True)
    lines = [
        json.dumps({"text": f"Document {i} talks about topic {i % 7} at length. " * 5})
        for i in range(n)
    ]
    (root / "web" / "a.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress("\n".join(lines).encode())
    )
    (root / "src").mkdir()
    for i in range(n):
        (root / "src" / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 4)
    return {"text": (str(root / "web" / "*.zst"),), "code": (str(root / "src"),)}


def _bytes_cfg(domains, out, **kw) -> PrepareConfig:
    return PrepareConfig(domains=domains, out=out, tokenizer=TokenizerSpec("bytes", 257), **kw)


def test_bytes_store_counts_every_byte(tmp_path):
    result = prepare(_bytes_cfg(_corpus(tmp_path), tmp_path / "store"), quiet=True)
    assert result.status == "built"
    store = TokenStore(tmp_path / "store")
    for d in ("text", "code"):
        info = store.info(d)
        for split in ("train", "val"):
            docs = info[f"{split}_documents"]
            assert docs >= 1
            # one token per byte plus one end-of-document token per document
            assert info[f"{split}_tokens"] == info[f"{split}_bytes"] + docs
            offsets = store.offsets(d, split)
            assert offsets[0] == 0 and offsets[-1] == info[f"{split}_tokens"]
            ends = store.tokens(d, split)[offsets[1:] - 1]
            assert (ends == store.eos_id).all()
        assert info["documents"] == 40
        assert all(len(s["blake2b"]) == 32 for s in info["sources"])
    assert store.dtype == np.uint16


def test_split_is_by_document_hash_and_deterministic(tmp_path):
    domains = _corpus(tmp_path / "c")
    prepare(_bytes_cfg(domains, tmp_path / "a", val_frac=0.3), quiet=True)
    prepare(_bytes_cfg(domains, tmp_path / "b", val_frac=0.3), quiet=True)
    for rel in ("text/val.bin", "code/train.bin", "code/val.idx"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    val = TokenStore(tmp_path / "a").info("code")["val_documents"]
    assert 4 <= val <= 20  # about 30 % of 40


def test_rerun_is_a_no_op_and_a_change_rebuilds(tmp_path):
    domains = _corpus(tmp_path / "c")
    cfg = _bytes_cfg(domains, tmp_path / "store")
    first = prepare(cfg, quiet=True)
    assert prepare(cfg, quiet=True).status == "up-to-date"
    (tmp_path / "c" / "src" / "new.py").write_text("print('more code')\n")
    again = prepare(cfg, quiet=True)
    assert again.status == "built"
    assert again.manifest["domains"]["code"]["documents"] == 41
    assert first.manifest["fingerprint"] != again.manifest["fingerprint"]
    assert not list(tmp_path.glob(".store.*"))  # no staging or old copies left behind


def test_rendered_tasks_survive_a_rebuild_with_the_same_tokenizer(tmp_path, capsys):
    domains = _corpus(tmp_path / "c")
    cfg = _bytes_cfg(domains, tmp_path / "store")
    prepare(cfg, quiet=True)
    out = tmp_path / "store"
    # as `codemix evals prepare` leaves them: a file per task, listed in the manifest
    (out / "evals").mkdir()
    (out / "evals" / "arc_easy.npz").write_bytes(b"rendered")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["evals"] = {"arc_easy": {"items": 3}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "c" / "src" / "new.py").write_text("print('more code')\n")
    assert prepare(cfg, quiet=True).status == "built"
    assert (out / "evals" / "arc_easy.npz").read_bytes() == b"rendered"
    assert TokenStore(out).manifest["evals"] == {"arc_easy": {"items": 3}}
    # another tokenizer: they would score wrong, so they go, and the user is told
    bpe = PrepareConfig(
        domains=cfg.domains, out=out, tokenizer=TokenizerSpec.parse("bpe:300"), val_frac=0.1
    )
    assert prepare(bpe, quiet=True).status == "built"
    assert not (out / "evals").exists() and "evals" not in TokenStore(out).manifest
    assert "its rendered tasks (arc_easy) are dropped" in capsys.readouterr().err


def test_bad_input_leaves_the_existing_store_alone(tmp_path):
    domains = _corpus(tmp_path / "c")
    cfg = _bytes_cfg(domains, tmp_path / "store")
    prepare(cfg, quiet=True)
    before = (tmp_path / "store" / "manifest.json").read_bytes()
    data = zstandard.ZstdCompressor().compress(b'{"text": "x"}\n' * 5000)
    (tmp_path / "c" / "web" / "b.jsonl.zst").write_bytes(data[: len(data) // 2])
    with pytest.raises(CodemixError, match=r"b\.jsonl\.zst: zstd stream ends early"):
        prepare(cfg, quiet=True)
    assert (tmp_path / "store" / "manifest.json").read_bytes() == before
    assert TokenStore(tmp_path / "store").n_tokens("text") > 0


def test_refuses_a_folder_that_is_not_a_store(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("precious")
    with pytest.raises(CodemixError, match="exists and is not a token store"):
        prepare(_bytes_cfg(_corpus(tmp_path / "c"), tmp_path / "out"), quiet=True)
    assert (tmp_path / "out" / "thesis.tex").read_text() == "precious"


class Killed(BaseException):
    pass


def test_killed_build_resumes_and_keeps_finished_files(tmp_path, monkeypatch):
    domains = _corpus(tmp_path / "c", n=6)
    cfg = PrepareConfig(
        domains=domains, out=tmp_path / "store", tokenizer=TokenizerSpec("bpe", 300)
    )
    real, calls, dying = _parts.tokenize_file, [], [True]

    def dies_on_fourth_file(task, part):
        calls.append(task.source.path.name)
        if len(calls) == 4 and dying[0]:
            raise Killed  # as if killed mid-way
        return real(task, part)

    monkeypatch.setattr(_parts, "tokenize_file", dies_on_fourth_file)
    with pytest.raises(Killed):
        prepare(cfg, quiet=True)
    assert not (tmp_path / "store").exists()  # nothing that looks complete
    finished, dying[0] = calls[:3], False
    calls.clear()
    result = prepare(cfg, quiet=True)
    assert result.status == "built"
    assert len(calls) == 7 - 3 and not set(finished) & set(calls)  # finished files kept
    monkeypatch.setattr(_parts, "tokenize_file", real)
    prepare(
        PrepareConfig(domains=domains, out=tmp_path / "fresh", tokenizer=TokenizerSpec("bpe", 300)),
        quiet=True,
    )
    for rel in ("text/train.bin", "code/train.bin", "code/val.idx", "tokenizer.json"):
        assert (tmp_path / "store" / rel).read_bytes() == (tmp_path / "fresh" / rel).read_bytes()


def test_tiny_domain_still_gets_a_validation_document(tmp_path):
    (tmp_path / "a.txt").write_text("alpha " * 50)
    (tmp_path / "b.txt").write_text("beta " * 50)
    cfg = _bytes_cfg({"t": (str(tmp_path / "*.txt"),)}, tmp_path / "s", val_frac=0.01)
    info = prepare(cfg, quiet=True).manifest["domains"]["t"]
    assert info["train_documents"] == 1 and info["val_documents"] == 1


def test_one_document_is_not_enough(tmp_path):
    (tmp_path / "a.txt").write_text("alone")
    with pytest.raises(CodemixError, match="'t': 1 document.*at least 2"):
        prepare(_bytes_cfg({"t": (str(tmp_path / "a.txt"),)}, tmp_path / "s"), quiet=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"domains": {}}, "no domain given"),
        ({"domains": {"1bad": ("x",)}}, "domain name '1bad'"),
        ({"val_frac": 0.0}, r"--val-frac 0.0"),
        ({"dtype": "int8"}, "--dtype 'int8'"),
    ],
)
def test_bad_config(tmp_path, kw, message):
    base = {"domains": {"t": ("x",)}, "out": tmp_path / "s"} | kw
    with pytest.raises(CodemixError, match=message):
        PrepareConfig(**base)


def test_vocabulary_too_large_for_uint16(tmp_path):
    cfg = PrepareConfig(
        domains=_corpus(tmp_path),
        out=tmp_path / "s",
        tokenizer=TokenizerSpec("bpe", 70_000),
        dtype="uint16",
    )
    with pytest.raises(CodemixError, match="vocabulary has 70000 tokens"):
        prepare(cfg, quiet=True)
    assert not (tmp_path / "s").exists()


def test_builtin_corpus_is_on_the_machine():
    domains = builtin_domains()
    assert set(domains) == {"text", "code"}
    speeches = list(Path(domains["text"][0]).parent.glob("*.txt"))
    assert len(speeches) >= 200
    assert Path(domains["code"][0]).parent.parent.joinpath("json", "__init__.py").is_file()


def test_small_real_store(small_store):
    store = TokenStore(small_store)
    assert store.domains == ("text", "code")
    assert store.vocab_size <= 512
    for d in store.domains:
        t = store.tokens(d)
        assert t.max() < store.vocab_size and len(t) > 10_000


def _val_documents(store: TokenStore, domain: str) -> list[bytes]:
    """The validation documents of a byte-tokenizer store, decoded, in stored order."""
    toks, offsets = store.tokens(domain, "val"), store.offsets(domain, "val")
    return [
        bytes(toks[a : b - 1].astype(np.uint8))
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]


def test_validation_split_does_not_depend_on_file_order(tmp_path):
    docs = [f"document {i}: " + "words " * (i + 1) for i in range(30)]
    lines = [json.dumps({"text": d}) for d in docs]
    for name, order in (("fwd", list(range(30))), ("rev", list(range(29, -1, -1)))):
        root = tmp_path / name
        root.mkdir()
        # the same documents under names that sort in the opposite order, and reversed lines
        for rank, i in enumerate(order):
            (root / f"{rank:02d}.txt").write_text(docs[i])
        (root / "all.jsonl").write_text("\n".join(lines[i] for i in order))
        domains = {"files": (str(root / "*.txt"),), "lines": (str(root / "all.jsonl"),)}
        prepare(_bytes_cfg(domains, tmp_path / f"store-{name}", val_frac=0.3), quiet=True)
    fwd, rev = TokenStore(tmp_path / "store-fwd"), TokenStore(tmp_path / "store-rev")
    for domain in ("files", "lines"):
        a, b = _val_documents(fwd, domain), _val_documents(rev, domain)
        assert 3 <= len(a) <= 20
        assert a != b  # stored in another order ...
        assert sorted(a) == sorted(b)  # ... but the same documents
        assert set(a) <= {d.encode() for d in docs}


def _cli_corpus(root: Path) -> list[str]:
    for i in range(6):
        (root / f"d{i}.txt").write_text(f"document number {i} " * 30)
        (root / f"c{i}.py").write_text(f"x{i} = {i}\n" * 30)
    return [
        "prepare",
        *("--domain", f"text={root}/*.txt", "--domain", f"code={root}/*.py"),
        *("--tokenizer", "bytes", "--out", str(root / "store"), "--quiet"),
    ]


def test_a_truncated_store_is_reported_and_rebuilt(tmp_path, capsys):
    argv, store = _cli_corpus(tmp_path), tmp_path / "store"
    assert main(argv) == 0
    expected = (store / "text" / "train.bin").stat().st_size
    with open(store / "text" / "train.bin", "r+b") as f:
        f.truncate(1234)
    capsys.readouterr()

    assert main(["store", "info", str(store)]) == 2
    out = capsys.readouterr().out
    assert "train_tokens" in out  # the table as usual, then what is wrong
    assert (
        f"store {store} is damaged:\n  text/train.bin: 1,234 bytes, expected {expected:,}\n" in out
    )

    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        f"store {store} is damaged (text/train.bin: 1,234 bytes, expected {expected:,}); "
        "rebuilding" in captured.err
    )
    assert f"rebuilt the damaged store {store}" in captured.out
    assert (store / "text" / "train.bin").stat().st_size == expected
    assert main(["store", "info", str(store), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    assert not list(tmp_path.glob(".store.*"))


def test_a_flipped_byte_is_found_by_verify_and_fixed_by_rebuild(tmp_path, capsys):
    argv, store = _cli_corpus(tmp_path), tmp_path / "store"
    assert main(argv) == 0
    data = bytearray((store / "code" / "train.bin").read_bytes())
    data[10] ^= 0x20
    (store / "code" / "train.bin").write_bytes(bytes(data))
    capsys.readouterr()

    assert main(["store", "info", str(store)]) == 0  # same size: the cheap check cannot tell
    assert "damaged" not in capsys.readouterr().out
    assert main(["store", "info", str(store), "--verify"]) == 2
    out = capsys.readouterr().out
    assert "code/train.bin: contents differ from the hash recorded when it was built" in out
    assert "adding --rebuild" in out

    assert main(argv) == 0
    assert "up to date" in capsys.readouterr().out
    assert main([*argv, "--rebuild"]) == 0
    assert "built" in capsys.readouterr().out
    assert main(["store", "info", str(store), "--verify"]) == 0


def test_a_store_without_hashes_says_verify_is_not_possible(tmp_path, capsys):
    argv, store = _cli_corpus(tmp_path), tmp_path / "store"
    assert main(argv) == 0
    manifest = json.loads((store / "manifest.json").read_text())
    for d in manifest["domains"].values():
        del d["blake2b"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["store", "info", str(store)]) == 0
    assert main(["store", "info", str(store), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "cannot check it; rebuild it with `codemix prepare ... --rebuild`" in err


def test_store_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        prepare(_bytes_cfg(_corpus(tmp_path / "c"), tmp_path / "store"), quiet=True)
    finally:
        os.umask(old)
    for rel in ("manifest.json", "text/train.bin", "code/val.idx"):
        assert stat.S_IMODE((tmp_path / "store" / rel).stat().st_mode) == 0o644, rel


def test_tokenizing_writes_plain_bounded_lines_to_a_log(tmp_path, capsys):
    prepare(_bytes_cfg(_corpus(tmp_path / "c"), tmp_path / "store"))
    err = capsys.readouterr().err  # not a terminal under pytest
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("tokenizing: ") and "(100%)" in line for line in lines)
    assert len(lines) <= 2 * 12  # two bars (checking, tokenizing)


# -- corpus scale: routing by a field, sampling, worker processes, signals --------------


@pytest.fixture
def test_the_papers_text_domain_is_one_command(tmp_path, corpus):
    result = prepare(_cfg(tmp_path, "store"), quiet=True)
    store = TokenStore(tmp_path / "store")
    assert store.domains == ("code", "text")
    kept = [r for r in corpus if r["meta"]["redpajama_set_name"] in SETS[:2]]
    text = _docs(store, "text") + _docs(store, "text", "val")
    assert sorted(text) == sorted(r["text"].encode() for r in kept)
    info = result.manifest["domains"]["text"]
    assert set(info["values"]) == set(SETS[:2])  # what fed it, by field value
    assert sum(v["documents"] for v in info["values"].values()) == len(kept)
    assert all("values" in s and s["documents"] > 0 for s in info["sources"])
    assert info["available_train_tokens"] == info["train_tokens"]  # nothing left out


def test_parquet_rows_route_by_a_column(tmp_path, corpus):
    cfg = PrepareConfig(
        domains={},
        out=tmp_path / "s",
        tokenizer=TokenizerSpec("bytes", 257),
        routed=(str(tmp_path / "stack" / "*.parquet"),),
        domain_from="lang",
        mapping=(("python", "py"), ("go", "go")),
    )
    m = prepare(cfg, quiet=True).manifest["domains"]
    assert m["py"]["documents"] == 3 * 26 and m["go"]["documents"] == 3 * 14


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ((("RedPajamaC4", "text"),), r"chunk_\d\.jsonl\.zst:\d+: meta\.redpajama_set_name is "),
        (
            PAPER_MAP + (("RedPajamaBook", "books"),),
            r"domain 'books' is empty \(--map RedPajamaBook",
        ),
    ],
)
def test_a_value_without_a_map_or_an_empty_domain_is_named(tmp_path, corpus, mapping, message):
    with pytest.raises(CodemixError, match=message):
        prepare(_cfg(tmp_path, "s", mapping=mapping), quiet=True)
    assert not (tmp_path / "s").exists()


def test_a_document_without_the_field_names_file_and_line(tmp_path, corpus):
    lines = [json.dumps({"text": "one", "meta": {"redpajama_set_name": "RedPajamaC4"}})] * 3
    lines.append(json.dumps({"text": "four", "meta": {}}))
    (tmp_path / "slim" / "odd.jsonl").write_text("\n".join(lines))
    cfg = _cfg(tmp_path, "s", routed=(str(tmp_path / "slim" / "*.json*"),))
    with pytest.raises(CodemixError, match=r"odd\.jsonl:4: no field 'meta\.redpajama_set_name'"):
        prepare(cfg, quiet=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"domain_from": None}, "--source needs --domain-from"),
        ({"mapping": ()}, "give --map VALUE=DOMAIN"),
        ({"mapping": (("*", "-"),)}, "every value is dropped"),
        ({"sample": {"web": 10}}, r"--sample web=\.\.\.: no such domain \(domains: code, text\)"),
        ({"sample_fraction": {"text": 1.5}}, r"--sample-fraction text=1.5"),
        ({"shard": (3, 3)}, r"--shard 3/3: expected K/N with 0 <= K < N"),
        ({"workers": 0}, "--workers 0"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, kw, message):
    with pytest.raises(CodemixError, match=message):
        _cfg(tmp_path, "s", **kw)


def test_a_sample_keeps_the_asked_tokens_by_document_hash(tmp_path, corpus):
    full = prepare(_cfg(tmp_path, "full", val_frac=0.2), quiet=True).manifest["domains"]["text"]
    asked = full["train_tokens"] // 3
    cfg = _cfg(tmp_path, "s", sample={"text": asked}, val_frac=0.2)
    info = prepare(cfg, quiet=True).manifest["domains"]["text"]
    assert info["train_tokens"] == pytest.approx(asked, rel=0.02)
    assert info["sample"]["method"] == "counted"
    assert info["available_train_tokens"] == pytest.approx(full["train_tokens"], rel=0.05)
    # a subset of the full store's documents, each in the same split
    store, whole = TokenStore(tmp_path / "s"), TokenStore(tmp_path / "full")
    for split in ("train", "val"):
        assert set(_docs(store, "text", split)) <= set(_docs(whole, "text", split))
    # the same documents in other files and another order: the same sample
    random.Random(1).shuffle(corpus)
    (tmp_path / "other").mkdir()
    for k in range(2):
        part = corpus[k::2]
        (tmp_path / "other" / f"x{k}.jsonl").write_text("\n".join(json.dumps(r) for r in part))
    routed = (str(tmp_path / "other" / "*"),)
    cfg = _cfg(tmp_path, "s2", sample={"text": asked}, routed=routed, val_frac=0.2)
    prepare(cfg, quiet=True)
    again = TokenStore(tmp_path / "s2")
    assert sorted(_docs(again, "text")) == sorted(_docs(store, "text"))


def test_a_pilot_estimates_a_large_domain(tmp_path, monkeypatch):
    _slim(tmp_path / "slim", files=20, per_file=80)
    _stack(tmp_path / "stack", files=1)
    monkeypatch.setattr(prep, "_PILOT_MIN_BYTES", 0)  # as if the corpus were large
    full = prepare(_cfg(tmp_path, "full"), quiet=True).manifest["domains"]["text"]
    asked = full["train_tokens"] // 2
    cfg = _cfg(tmp_path, "s", sample={"text": asked}, sample_pilot=0.3)
    info = prepare(cfg, quiet=True).manifest["domains"]["text"]
    assert info["sample"]["method"].startswith("estimated from a pilot over")
    assert info["train_tokens"] == pytest.approx(asked, rel=0.15)
    assert info["available_train_tokens"] == pytest.approx(full["train_tokens"], rel=0.1)


def test_a_sample_larger_than_the_domain_is_refused(tmp_path, corpus):
    with pytest.raises(CodemixError, match=r"--sample text=10M: domain 'text' holds [\d.]+K"):
        prepare(_cfg(tmp_path, "s", sample={"text": 10_000_000}), quiet=True)
    assert not (tmp_path / "s").exists()


def test_many_workers_write_what_one_writes(tmp_path, corpus):
    kw = {"tokenizer": TokenizerSpec("bpe", 300), "sample_fraction": {"text": 0.5}}
    prepare(_cfg(tmp_path, "one", **kw), quiet=True)
    prepare(_cfg(tmp_path, "two", workers=2, **kw), quiet=True)
    _same_store(tmp_path / "one", tmp_path / "two")


def test_cli_routes_samples_and_shards(tmp_path, corpus, capsys):
    argv = [
        "prepare",
        # the files one by one, as a shell expands an unquoted glob
        *("--source", *sorted(str(p) for p in (tmp_path / "slim").glob("*.jsonl.zst"))),
        *("--domain-from", "meta.redpajama_set_name"),
        *("--map", "RedPajamaGithub=-", "--map", "RedPajamaStackExchange=-", "--map", "*=text"),
        *("--domain", f"code={tmp_path / 'stack'}/*.parquet"),
        *("--sample-fraction", "text=0.5", "--tokenizer", "bytes", "--workers", "1", "--quiet"),
    ]
    assert main([*argv, "--out", str(tmp_path / "s"), "--shard", "0/2"]) == 0
    out = capsys.readouterr().out
    assert "built shard 0/2 of" in out
    assert main(["store", "info", str(tmp_path / "s")]) == 0
    assert "shard 0 of 2" in capsys.readouterr().out
    assert main([*argv, "--out", str(tmp_path / "t"), "--shard", "2"]) != 0
    assert "--shard '2': expected K/N" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "t"), "--map", "text"]) != 0
    assert "--map 'text': expected VALUE=DOMAIN" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "t"), "--workers", "0"]) != 0  # not "all cores"
    assert "--workers 0: expected at least 1" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_a_signal_stops_between_files_and_the_build_resumes(tmp_path, corpus, monkeypatch):
    real, calls = _parts.tokenize_file, []

    def terminated_during_the_second(task, part):
        calls.append(task.index)
        if calls == [0, 1]:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler preempting the job
        return real(task, part)

    monkeypatch.setattr(_parts, "tokenize_file", terminated_during_the_second)
    with pytest.raises(Interrupted, match="2 of 7 files finished") as stop:
        prepare(_cfg(tmp_path, "s"), quiet=True)
    assert stop.value.signal == "SIGTERM" and len(calls) == 2  # the file in hand finished
    calls.clear()
    prepare(_cfg(tmp_path, "s"), quiet=True)
    assert len(calls) == 5


def test_a_second_build_of_one_store_at_once_is_refused(tmp_path, corpus):
    import subprocess
    import sys

    staging = tmp_path / ".s.partial"
    holder = subprocess.Popen(  # another codemix process building the same store
        [
            sys.executable,
            "-c",
            "import sys, time; from codemix.core.lock import folder_lock\n"
            f"with folder_lock({str(staging)!r}, 'x'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CodemixError, match=r"the build of --out .*s in .*being written"):
            prepare(_cfg(tmp_path, "s"), quiet=True)
    finally:
        holder.kill()
        holder.wait()
    prepare(_cfg(tmp_path, "s"), quiet=True)  # free again: builds
    assert TokenStore(tmp_path / "s").domains == ("code", "text")


def test_a_document_separator_splits_plain_files_and_rebuilds(tmp_path):
    (tmp_path / "text").mkdir()
    fortunes = "\n%\n".join(f"Fortune number {i} says something wise." for i in range(30))
    (tmp_path / "text" / "fortunes").write_text(fortunes + "\n")
    domains = {"text": (str(tmp_path / "text" / "*"),), "code": _corpus(tmp_path / "c")["code"]}
    with pytest.raises(CodemixError, match="1 document.*unless --doc-separator LINE splits"):
        prepare(_bytes_cfg(domains, tmp_path / "store"), quiet=True)
    (tmp_path / "text" / "more").write_text(fortunes.replace("Fortune", "Saying"))
    whole = prepare(_bytes_cfg(domains, tmp_path / "store"), quiet=True)
    assert whole.manifest["domains"]["text"]["documents"] == 2
    split = prepare(
        _bytes_cfg(domains, tmp_path / "store", read=ReadOptions(separator="%")), quiet=True
    )
    assert split.status == "built"  # the separator is part of what the store was built from
    assert split.manifest["domains"]["text"]["documents"] == 60
    assert split.manifest["read"]["separator"] == "%"
    assert "separator" not in whole.manifest["read"]


def test_a_document_separator_without_plain_files_is_refused(tmp_path):
    text = _corpus(tmp_path / "c")["text"]  # JSON lines only
    cfg = _bytes_cfg({"text": text}, tmp_path / "store", read=ReadOptions(separator="%"))
    with pytest.raises(CodemixError, match="--doc-separator '%' splits plain files"):
        prepare(cfg, quiet=True)
    assert not (tmp_path / "store").exists()

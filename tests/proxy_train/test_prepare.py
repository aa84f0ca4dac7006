import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import zstandard

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.proxy_train import prepare as prep
from codemix.proxy_train.prepare import PrepareConfig, builtin_domains, prepare
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec


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


def test_killed_build_resumes_and_keeps_finished_domains(tmp_path, monkeypatch):
    domains = _corpus(tmp_path / "c")
    cfg = PrepareConfig(
        domains=domains, out=tmp_path / "store", tokenizer=TokenizerSpec("bpe", 300)
    )
    real, calls = prep._tokenize_domain, []

    def dies_on_second_domain(name, *a, **kw):
        calls.append(name)
        if len(calls) == 2:
            raise Killed  # as if killed mid-way
        return real(name, *a, **kw)

    monkeypatch.setattr(prep, "_tokenize_domain", dies_on_second_domain)
    with pytest.raises(Killed):
        prepare(cfg, quiet=True)
    assert not (tmp_path / "store").exists()  # nothing that looks complete
    calls.clear()
    result = prepare(cfg, quiet=True)
    assert calls == ["code"]  # text was finished and kept, code redone
    assert result.status == "built"
    monkeypatch.setattr(prep, "_tokenize_domain", real)
    prepare(
        PrepareConfig(domains=domains, out=tmp_path / "fresh", tokenizer=TokenizerSpec("bpe", 300)),
        quiet=True,
    )
    for rel in ("text/train.bin", "code/train.bin", "tokenizer.json"):
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

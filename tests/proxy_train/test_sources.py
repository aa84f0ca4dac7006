import gzip
import json

import polars as pl
import pytest
import zstandard

from codemix.core.errors import CodemixError
from codemix.proxy_train.sources import ReadOptions, check, iter_documents, resolve, source_format

DOCS = ["first document", "second one\nwith two lines", "third: ünïcode ✓"]


def _jsonl(docs, key="text") -> bytes:
    return "\n".join(json.dumps({key: d, "meta": 1}) for d in docs).encode() + b"\n"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(DOCS))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(DOCS)))
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(_jsonl(DOCS)))
    pl.DataFrame({"content": DOCS, "lang": ["py"] * 3}).write_parquet(tmp_path / "a.parquet")
    tree = tmp_path / "tree" / "pkg"
    tree.mkdir(parents=True)
    (tree / "m.py").write_text("x = 1\n")
    (tree / "notes.bin").write_bytes(b"\x00\x01")
    (tree / "r.md").write_text("# readme\n")
    return tmp_path


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst", "a.json.gz", "a.parquet"])
def test_formats_yield_the_documents(files, name):
    (src,) = resolve("d", str(files / name), ReadOptions())
    seen = []
    assert len(check(src, ReadOptions())) == 32
    assert list(iter_documents(src, ReadOptions(), seen.append)) == DOCS
    assert sum(seen) == src.size  # progress accounts for every byte of the file


def test_source_tree_reads_files_by_extension(files):
    srcs = resolve("code", str(files / "tree"), ReadOptions(extensions=(".py", "md")))
    assert [s.path.name for s in srcs] == ["m.py", "r.md"]
    assert [d for s in srcs for d in iter_documents(s, ReadOptions())] == ["x = 1\n", "# readme\n"]


def test_format_by_suffix():
    from pathlib import Path

    assert source_format(Path("x.JSONL.ZST")) == "jsonl.zst"
    assert source_format(Path("x.txt")) == "file"
    assert source_format(Path("x.json.gz")) == "json.gz"


def test_concatenated_zstd_frames(tmp_path):
    c = zstandard.ZstdCompressor()
    (tmp_path / "m.jsonl.zst").write_bytes(
        c.compress(_jsonl(DOCS[:1])) + c.compress(_jsonl(DOCS[1:]))
    )
    (src,) = resolve("d", str(tmp_path / "m.jsonl.zst"), ReadOptions())
    check(src, ReadOptions())
    assert list(iter_documents(src, ReadOptions())) == DOCS


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(CodemixError, match=r"domain 'web': no file matches .*\*\.jsonl"):
        resolve("web", str(tmp_path / "*.jsonl"), ReadOptions())


def test_empty_sources(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(CodemixError, match="every file matching .* is empty"):
        resolve("t", str(tmp_path / "e.txt"), ReadOptions())


def test_directory_without_matching_files(files):
    with pytest.raises(CodemixError, match="holds no file with a suffix"):
        resolve("code", str(files / "tree"), ReadOptions(extensions=(".rs",)))


def test_directory_of_other_suffixes_names_the_ones_it_holds(tmp_path):
    """fortune files: the text has no suffix, beside .dat indexes and .u8 links"""
    for name in ("art", "cookie", "songs"):
        (tmp_path / name).write_text("a fortune\n%\n")
        (tmp_path / f"{name}.dat").write_bytes(b"\0\1")
    (tmp_path / "art.u8").write_text("a fortune\n")
    with pytest.raises(CodemixError, match=r"it holds \.dat \(3\), no suffix \(3\), \.u8 \(1\)"):
        resolve("text", str(tmp_path), ReadOptions())
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodemixError, match=r"directory .*empty holds no file$"):
        resolve("text", str(tmp_path / "empty"), ReadOptions())


def test_truncated_zstd_is_caught_by_check(tmp_path):
    data = zstandard.ZstdCompressor().compress(_jsonl(DOCS * 2000))
    (tmp_path / "t.jsonl.zst").write_bytes(data[: len(data) // 2])
    (src,) = resolve("d", str(tmp_path / "t.jsonl.zst"), ReadOptions())
    with pytest.raises(CodemixError, match=r"t\.jsonl\.zst: zstd stream ends early"):
        check(src, ReadOptions())


def test_truncated_gzip_is_caught_by_check(tmp_path):
    data = gzip.compress(_jsonl(DOCS * 2000))
    (tmp_path / "t.json.gz").write_bytes(data[: len(data) // 2])
    (src,) = resolve("d", str(tmp_path / "t.json.gz"), ReadOptions())
    with pytest.raises(CodemixError, match=r"t\.json\.gz: gzip stream ends early"):
        check(src, ReadOptions())


def test_garbage_zstd(tmp_path):
    (tmp_path / "g.jsonl.zst").write_bytes(b"this is not zstd at all" * 10)
    (src,) = resolve("d", str(tmp_path / "g.jsonl.zst"), ReadOptions())
    with pytest.raises(CodemixError, match="corrupt zstd data"):
        check(src, ReadOptions())


def test_parquet_without_the_text_column(tmp_path):
    pl.DataFrame({"code": DOCS}).write_parquet(tmp_path / "s.parquet")
    (src,) = resolve("d", str(tmp_path / "s.parquet"), ReadOptions())
    with pytest.raises(CodemixError, match=r"s\.parquet: no column 'content' \(columns: code"):
        check(src, ReadOptions())
    assert list(iter_documents(src, ReadOptions(content_field="code"))) == DOCS


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1 but not really")
    (src,) = resolve("d", str(tmp_path / "x.parquet"), ReadOptions())
    with pytest.raises(CodemixError, match="not a readable parquet file"):
        check(src, ReadOptions())


def test_jsonl_without_the_field(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(DOCS, key="body"))
    (src,) = resolve("d", str(tmp_path / "a.jsonl"), ReadOptions())
    with pytest.raises(CodemixError, match=r"a\.jsonl:1: no 'text' field"):
        check(src, ReadOptions())


def test_bad_json_line_names_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(DOCS) + b"{broken\n")
    (src,) = resolve("d", str(tmp_path / "a.jsonl"), ReadOptions())
    with pytest.raises(CodemixError, match=r"a\.jsonl:4: not valid JSON"):
        list(iter_documents(src, ReadOptions()))


def test_a_separator_line_splits_a_plain_file(tmp_path):
    (tmp_path / "fortunes").write_text("%\nfirst\nfortune\n%\n\n%  \nsecond\n%\nthird\n")
    (src,) = resolve("d", str(tmp_path / "fortunes"), ReadOptions())
    assert list(iter_documents(src, ReadOptions(separator="%"))) == [
        "first\nfortune\n",
        "second\n",
        "third\n",
    ]  # separator lines, blanks around them, and empty stretches belong to no document
    assert list(iter_documents(src, ReadOptions())) == [(tmp_path / "fortunes").read_text()]


@pytest.mark.parametrize("separator", ["", "  ", "a\nb"])
def test_a_separator_that_is_not_one_visible_line_is_refused(separator):
    with pytest.raises(CodemixError, match="--doc-separator"):
        ReadOptions(separator=separator)

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from codemix.core.errors import CodemixError
from codemix.proxy_train.prepare import PrepareConfig, prepare
from codemix.proxy_train.store import (
    TokenStore,
    check_store,
    describe,
    spread_cap,
    verify_store,
)
from codemix.proxy_train.tokenizer import TokenizerSpec


def _tiny_store(root: Path, val_frac: float = 0.3) -> Path:
    for i in range(8):
        (root / f"t{i}.txt").write_text(f"plain text number {i}. " * (i + 3))
        (root / f"c{i}.py").write_text(f"def f{i}():\n    return {i}\n" * (i + 1))
    out = root / "store"
    domains = {"text": (str(root / "*.txt"),), "code": (str(root / "*.py"),)}
    cfg = PrepareConfig(domains, out, tokenizer=TokenizerSpec("bytes"), val_frac=val_frac)
    prepare(cfg, quiet=True)
    return out


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return _tiny_store(tmp_path)


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def test_an_intact_store_has_no_problems(store_dir):
    assert check_store(store_dir) == []
    assert verify_store(store_dir) == []


def test_the_manifest_holds_each_data_files_blake2b(store_dir):
    for name, d in _manifest(store_dir)["domains"].items():
        assert sorted(d["blake2b"]) == ["train.bin", "train.idx", "val.bin", "val.idx"]
        for file, digest in d["blake2b"].items():
            data = (store_dir / name / file).read_bytes()
            assert digest == hashlib.blake2b(data, digest_size=16).hexdigest()


def test_a_document_moved_between_splits_is_hashed_once(tmp_path):
    # one val document per domain is only reached by taking train's last one back
    store = _tiny_store(tmp_path, val_frac=0.001)
    assert _manifest(store)["domains"]["text"]["val_documents"] == 1
    assert verify_store(store) == []


def test_a_truncated_bin_is_named_with_its_sizes(store_dir):
    tokens = _manifest(store_dir)["domains"]["text"]["train_tokens"]
    bin_file = store_dir / "text" / "train.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:100])
    assert check_store(store_dir) == [f"text/train.bin: 100 bytes, expected {2 * tokens:,}"]


def test_missing_files_are_named(store_dir):
    (store_dir / "code" / "val.idx").unlink()
    (store_dir / "code" / "train.bin").unlink()
    problems = check_store(store_dir)
    assert problems == ["code/train.bin: missing", "code/val.idx: missing"]
    assert describe(problems) == "code/train.bin: missing; and 1 more problem"


def test_an_index_must_end_at_the_token_count(store_dir):
    idx = store_dir / "text" / "val.idx"
    offsets = np.fromfile(idx, np.int64)
    offsets[-1] += 1  # same size, wrong end
    offsets.tofile(idx)
    assert check_store(store_dir) == [
        f"text/val.idx: offsets run from 0 to {offsets[-1]:,}, expected 0 to {offsets[-1] - 1:,}"
    ]


def test_an_older_manifest_without_document_counts_is_checked_by_the_index_ends(store_dir):
    manifest = _manifest(store_dir)
    for d in manifest["domains"].values():
        del d["train_documents"], d["val_documents"]
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    assert check_store(store_dir) == []
    idx = store_dir / "code" / "train.idx"
    idx.write_bytes(idx.read_bytes()[:-8])  # one offset short: the last is not the end
    assert check_store(store_dir)[0].startswith("code/train.idx: offsets run from 0 to")


def test_a_flipped_byte_is_found_only_by_verify(store_dir):
    bin_file = store_dir / "code" / "val.bin"
    data = bytearray(bin_file.read_bytes())
    data[3] ^= 1
    bin_file.write_bytes(bytes(data))
    assert check_store(store_dir) == []
    assert verify_store(store_dir) == [
        "code/val.bin: contents differ from the hash recorded when it was built"
    ]


def test_verify_leaves_a_wrong_size_to_the_size_check(store_dir):
    (store_dir / "text" / "train.bin").write_bytes(b"")
    assert verify_store(store_dir) == []


def test_a_store_without_hashes_cannot_be_verified(store_dir):
    manifest = _manifest(store_dir)
    for d in manifest["domains"].values():
        del d["blake2b"]
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    assert check_store(store_dir) == []
    with pytest.raises(CodemixError, match="before codemix recorded content hashes.*--rebuild"):
        verify_store(store_dir)


def test_opening_a_damaged_store_fails_at_once(store_dir):
    TokenStore(store_dir)
    (store_dir / "text" / "val.bin").unlink()
    with pytest.raises(CodemixError, match=r"is damaged \(text/val.bin: missing\); rebuild"):
        TokenStore(store_dir)


def test_spread_cap_takes_blocks_from_the_whole_domain():
    x = np.arange(10_000)
    got = spread_cap(x, 1000, block=64)
    assert len(got) == 1000 and np.all(np.diff(got) > 0)  # distinct, in store order
    assert got[0] < 500 and got[-1] > 9500  # not a prefix: from start to end
    runs = np.split(got, np.flatnonzero(np.diff(got) > 1) + 1)
    assert len(runs) == 16 and {len(r) for r in runs} <= {62, 63}  # blocks of about 64
    assert spread_cap(x, 20_000) is x and len(spread_cap(x, 1)) == 1

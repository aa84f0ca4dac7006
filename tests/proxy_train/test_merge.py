"""`codemix store merge`: shards of one build joined into the one-machine store."""

import pytest

from codemix.cli import main
from codemix.core.errors import CodemixError
from codemix.proxy_train.merge import merge_stores
from codemix.proxy_train.prepare import prepare
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec

from ._corpus import _cfg, _same_store


def test_shards_merge_into_the_one_machine_store(tmp_path, corpus, capsys):
    kw = {"sample": {"text": 3000}, "tokenizer": TokenizerSpec("bpe", 300)}
    prepare(_cfg(tmp_path, "whole", **kw), quiet=True)
    for k in range(3):
        prepare(_cfg(tmp_path, f"part{k}", shard=(k, 3), **kw), quiet=True)
    with pytest.raises(CodemixError, match="shard 1 of 3 of a store, not a whole one"):
        TokenStore(tmp_path / "part1")
    parts = [str(tmp_path / f"part{k}") for k in (2, 0, 1)]  # any order
    assert main(["store", "merge", *parts, "--out", str(tmp_path / "merged")]) == 0
    _same_store(tmp_path / "whole", tmp_path / "merged")
    assert main(["store", "merge", *parts, "--out", str(tmp_path / "merged")]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_merge_refuses_missing_duplicate_or_foreign_shards(tmp_path, corpus):
    for k in range(3):
        prepare(_cfg(tmp_path, f"p{k}", shard=(k, 3)), quiet=True)
    prepare(_cfg(tmp_path, "other", shard=(2, 3), val_frac=0.2), quiet=True)
    prepare(_cfg(tmp_path, "whole"), quiet=True)
    p = [tmp_path / f"p{k}" for k in range(3)]
    out = tmp_path / "m"
    with pytest.raises(CodemixError, match="shard 1 of 3 missing"):
        merge_stores([p[0], p[2]], out)
    with pytest.raises(CodemixError, match="are both shard 0"):
        merge_stores([p[0], p[0], p[1], p[2]], out)
    with pytest.raises(CodemixError, match=r"other: a shard of another build"):
        merge_stores([p[0], p[1], tmp_path / "other"], out)
    with pytest.raises(CodemixError, match=r"whole: a whole store, not a shard"):
        merge_stores([p[0], tmp_path / "whole"], out)
    assert not out.exists()

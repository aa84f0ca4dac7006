"""`codemix store merge`: shards of one build (`prepare --shard K/N`) -> one token store.

A shard holds the documents of a contiguous run of the build's files, so the shards'
token files concatenated in shard order are the one-machine store's, byte for byte; the
merge then does what only the whole store can: gives a split left empty the other split's
last document, and counts the domain's available tokens.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from codemix.core.errors import CodemixError
from codemix.core.files import atomic_write_text
from codemix.core.lock import folder_lock
from codemix.proxy_train import _parts, store
from codemix.proxy_train.prepare import _swap_into_place, finish_domain


def _check_parts(parts: list[Path]) -> list[tuple[Path, dict]]:
    """The parts in shard order, or a one-line error naming the part at fault."""
    if not parts:
        raise CodemixError("store merge: give the shards to join (PART...)")
    loaded = []
    for p in parts:
        m = store.read_manifest(p, partial=True)
        if "shard" not in m:
            raise CodemixError(f"{p}: a whole store, not a shard made with `prepare --shard`")
        if problems := store.check_store(p, m):
            raise CodemixError(f"{p}: damaged ({store.describe(problems)}); prepare it again")
        loaded.append((Path(p), m))
    ref_path, ref = loaded[0]
    for p, m in loaded[1:]:
        if m["tokenizer"]["hash"] != ref["tokenizer"]["hash"]:
            raise CodemixError(
                f"{p}: made with another tokenizer (hash {m['tokenizer']['hash']}) than "
                f"{ref_path} ({ref['tokenizer']['hash']}); every shard needs one tokenizer file"
            )
        if (
            m["shard"]["build"] != ref["shard"]["build"]
            or m["shard"]["count"] != ref["shard"]["count"]
        ):
            raise CodemixError(
                f"{p}: a shard of another build than {ref_path} (other sources, options or "
                "shard count); prepare every shard with the same command but --shard"
            )
    by_index: dict[int, Path] = {}
    for p, m in loaded:
        k = m["shard"]["index"]
        if k in by_index:
            raise CodemixError(f"{by_index[k]} and {p} are both shard {k}")
        by_index[k] = p
    n = ref["shard"]["count"]
    missing = [k for k in range(n) if k not in by_index]
    if missing:
        listed = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise CodemixError(
            f"store merge: shard{'s' * (len(missing) > 1)} {listed} of {n} missing; "
            "prepare them with --shard K/N and give every part"
        )
    return sorted(loaded, key=lambda pm: pm[1]["shard"]["index"])


def _segment(part: Path, info: dict, split: str) -> _parts.Segment:
    lengths = np.diff(np.fromfile(part / f"{split}.idx", dtype=np.int64))
    n_bytes, last = int(info[f"{split}_bytes"]), int(info[f"last_{split}_bytes"])
    return _parts.Segment(part / f"{split}.bin", lengths, n_bytes, last)


def merge_stores(parts: list[Path], out: Path) -> tuple[str, dict]:
    """Join the shards into the store `out`; ("up-to-date" | "built", its manifest)."""
    loaded = _check_parts([Path(p) for p in parts])
    ref = loaded[0][1]
    build = ref["shard"]["build"]
    out = Path(out)
    if (out / "manifest.json").is_file():
        old = store.read_manifest(out, partial=True)
        if old.get("fingerprint") == build and not store.check_store(out, old):
            return "up-to-date", old
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CodemixError(
            f"--out {out}: exists and is not a token store; give a new or empty folder"
        )
    staging = out.parent / f".{out.name}.partial"
    with folder_lock(staging, f"the merge into --out {out} in"):
        for child in staging.iterdir():  # a merge killed before: start again
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        dtype = np.dtype(ref["dtype"])
        domains = {}
        for name in ref["domains"]:
            segments = {s: [] for s in store.SPLITS}
            read = {s: 0 for s in store.SPLITS}
            sources, values = [], {}
            for path, m in loaded:
                info = m["domains"][name]
                for s in store.SPLITS:
                    if info[f"{s}_documents"]:
                        segments[s].append(_segment(path / name, info, s))
                    read[s] += info[f"read_{s}_bytes"]
                sources += info["sources"]
                for v, c in info.get("values", {}).items():
                    acc = values.setdefault(v, {"documents": 0, "bytes": 0})
                    acc["documents"] += c["documents"]
                    acc["bytes"] += c["bytes"]
            info = _parts.assemble(name, segments, staging / name, dtype, whole=True)
            sample = ref["domains"][name].get("sample")
            domains[name] = finish_domain(info, read, sample, values, sources)
        manifest = {k: v for k, v in ref.items() if k != "shard"}
        manifest |= {
            "fingerprint": build,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "domains": domains,
        }
        if ref["tokenizer"].get("file"):
            shutil.copyfile(loaded[0][0] / ref["tokenizer"]["file"], staging / "tokenizer.json")
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=1))
        _swap_into_place(staging, out)
        return "built", manifest

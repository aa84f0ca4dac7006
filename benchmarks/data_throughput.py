"""Data path throughput on this machine: tokenisation and the mixture sampler.

Budget: no model, no accelerator. Reads the whole built-in corpus (~42 MB: State of the
Union addresses and the Python standard library), trains a byte-level BPE (vocab 8192) on
an 8 MB sample, tokenises everything, then draws batches of 32 x 512 tokens from a
three-stage schedule. Expected wall time on a 2-core CPU: about 1 minute.

    python benchmarks/data_throughput.py [--vocab 8192] [--batches 3000]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

from codemix.proxy_train import prepare as prep
from codemix.proxy_train import sources
from codemix.proxy_train.sampler import MixtureSampler
from codemix.proxy_train.schedule import LRShape, Schedule, Stage
from codemix.proxy_train.store import TokenStore
from codemix.proxy_train.tokenizer import TokenizerSpec


def tokenisation(out: Path, vocab: int) -> dict:
    cfg = prep.PrepareConfig(
        domains=prep.builtin_domains(), out=out, tokenizer=TokenizerSpec("bpe", vocab)
    )
    files = prep._resolve(cfg)
    raw = sum(f.size for fs in files.values() for f in fs)
    t0 = time.perf_counter()
    tok = prep._train_tokenizer(cfg, files, quiet=True)
    t_bpe = time.perf_counter() - t0
    docs = [d for fs in files.values() for f in fs for d in sources.iter_documents(f, cfg.read)]
    text_bytes = sum(len(d.encode()) for d in docs)
    t0 = time.perf_counter()
    n_tokens = 0
    for i in range(0, len(docs), 256):
        n_tokens += sum(len(x) for x in tok.encode_batch(docs[i : i + 256]))
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    prep.prepare(cfg, quiet=True)
    t_all = time.perf_counter() - t0
    return {
        "raw_mb": raw / 1e6,
        "text_mb": text_bytes / 1e6,
        "tokens_m": n_tokens / 1e6,
        "bpe_train_s": t_bpe,
        "encode_mb_s": text_bytes / 1e6 / t_enc,
        "prepare_s": t_all,
        "prepare_mb_s": raw / 1e6 / t_all,
    }


def sampler(store_dir: Path, batches: int, B: int = 32, T: int = 512) -> dict:
    store = TokenStore(store_dir)
    schedule = Schedule(
        (
            Stage("init", {"text": 0.5, "code": 0.5}, fraction=0.45),
            Stage("continual", {"text": 0.9, "code": 0.1}, fraction=0.45),
            Stage("cooldown", {"text": 0.8, "code": 0.2}, fraction=0.1, lr=LRShape("linear")),
        ),
        run_tokens=batches * B * T,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small corpus repeats; that is fine here
        s = MixtureSampler(store, schedule.plan(B * T), B, T, seed=0)
    for i in range(20):
        s.batch(i)
    t0 = time.perf_counter()
    for i in range(s.total_steps):
        s.batch(i)
    dt = time.perf_counter() - t0
    return {
        "batches": s.total_steps,
        "tokens_per_s_m": s.total_steps * B * T / dt / 1e6,
        "us_per_batch": dt / s.total_steps * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batches", type=int, default=3000)
    args = ap.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "store"
        t = tokenisation(out, args.vocab)
        print("\ntokenisation, whole built-in corpus, byte-level BPE vocab", args.vocab)
        print(
            f"{'raw MB':>8} {'text MB':>8} {'tokens':>8} {'BPE train s':>12} "
            f"{'encode MB/s':>12} {'prepare s':>10} {'prepare MB/s':>13}"
        )
        print(
            f"{t['raw_mb']:8.1f} {t['text_mb']:8.1f} {t['tokens_m']:7.2f}M "
            f"{t['bpe_train_s']:12.1f} {t['encode_mb_s']:12.2f} {t['prepare_s']:10.1f} "
            f"{t['prepare_mb_s']:13.2f}"
        )
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the sampler gets one core
        s = sampler(out, args.batches)
        print("\nsampler, batches of 32 x 512, three stages, one core")
        print(f"{'batches':>8} {'tokens/s':>10} {'us/batch':>9}")
        print(f"{s['batches']:8d} {s['tokens_per_s_m']:9.1f}M {s['us_per_batch']:9.0f}")


if __name__ == "__main__":
    main()

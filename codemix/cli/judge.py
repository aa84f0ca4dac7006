"""`codemix judge`: the generative win-rate of one run over another, by an LLM judge."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "judge",
        help="win-rate of one run's answers over another's, by an LLM judge",
        description="Both runs answer every prompt of FILE.jsonl by greedy generation; an "
        "OpenAI-compatible chat-completions endpoint judges each pair in both orders; "
        "the result is RUN_A's win-rate over RUN_B (AlpacaEval's definition) with its "
        "standard error. Killed and run again with the same command, it asks the judge "
        "only about the prompts not yet judged.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run folder (codemix train --out)")
    p.add_argument("run_b", metavar="RUN_B", help="the run it is compared with")
    p.add_argument(
        "--prompts",
        required=True,
        metavar="FILE.jsonl",
        help='one JSON object a line: "instruction", optional "context" and "id" (as Dolly)',
    )
    p.add_argument(
        "--judge-url",
        required=True,
        metavar="URL",
        help="API root (http://HOST:8000/v1) or the full .../chat/completions URL",
    )
    p.add_argument(
        "--judge-model", metavar="NAME", help="model to ask (default: the only one served)"
    )
    p.add_argument(
        "--key-env",
        metavar="VAR",
        help="environment variable holding the API key, sent as a bearer token "
        "(default: CODEMIX_JUDGE_KEY, which may be unset for a local server)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=256,
        metavar="N",
        help="answer length at most (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds per judge request (default: %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retries of a failed request, and of a verdict that is not A, B or tie "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=4,
        metavar="N",
        help="judge requests in flight at once (default: %(default)s)",
    )
    p.add_argument("-o", "--out", required=True, metavar="JUDGE.json", help="the result")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_judge)


def _answers(run_dir, texts: list[str], max_new_tokens: int, quiet: bool):
    """The run's greedy answer to every prompt text, and the checkpoint step answering."""
    import sys

    from codemix.evaluation.checkpoint import load_run
    from codemix.evaluation.generate import generate_text

    if not quiet:
        print(f"answering {len(texts)} prompts with {run_dir}", file=sys.stderr, flush=True)
    run = load_run(run_dir)
    step = getattr(run, "step", None)
    if max_new_tokens >= run.cfg.seq_len:  # a proxy's context is short: leave room for the prompt
        max_new_tokens = run.cfg.seq_len // 2
        print(
            f"{run_dir}: a context of {run.cfg.seq_len} tokens; answers are cut at "
            f"{max_new_tokens} new tokens",
            file=sys.stderr,
            flush=True,
        )
    answers = generate_text(run, texts, max_new_tokens=max_new_tokens, progress=not quiet)
    del run
    if len(answers) != len(texts):
        raise RuntimeError(f"generate_text gave {len(answers)} answers to {len(texts)} prompts")
    return [a.strip() for a in answers], step


def _judge(args) -> int:
    import json
    import os
    import sys
    from pathlib import Path

    from codemix.core.errors import CodemixError
    from codemix.core.files import atomic_write_text
    from codemix.evaluation.judge import (
        DEFAULT_KEY_ENV,
        PROMPT_TEMPLATE,
        PROMPT_TEMPLATE_CONTEXT,
        JudgeClient,
        judge_pairs,
        read_prompts,
        render_prompt,
    )

    for flag, value, low in (
        ("--max-new-tokens", args.max_new_tokens, 1),
        ("--retries", args.retries, 0),
        ("--parallel", args.parallel, 1),
    ):
        if value < low:
            raise CodemixError(f"{flag} {value}: must be at least {low}")
    if not args.timeout > 0:
        raise CodemixError(f"--timeout {args.timeout}: must be more than 0")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise CodemixError(f"output folder {out.parent} does not exist")
    for run in (args.run_a, args.run_b):
        if not Path(run).is_dir():
            raise CodemixError(f"run folder {run} does not exist")
    prompts = read_prompts(args.prompts)

    key_env = args.key_env or DEFAULT_KEY_ENV
    key = os.environ.get(key_env) or None
    if args.key_env and key is None:
        raise CodemixError(f"--key-env {key_env}: that environment variable is not set")
    client = JudgeClient(
        args.judge_url,
        args.judge_model,
        key,
        timeout=args.timeout,
        retries=args.retries,
        key_env=key_env,
    )
    client.probe()  # before any generation
    if not args.quiet:
        print(f"judge: {client.model or 'the served model'} at {client.url}", file=sys.stderr)

    texts = [render_prompt(p) for p in prompts]
    answers_a, step_a = _answers(Path(args.run_a), texts, args.max_new_tokens, args.quiet)
    answers_b, step_b = _answers(Path(args.run_b), texts, args.max_new_tokens, args.quiet)

    partial = out.with_name(out.name + ".partial.jsonl")
    known: list[dict] = []
    if out.is_file():  # a finished judging run again: its verdicts stand
        try:
            known = json.loads(out.read_text(encoding="utf-8")).get("records") or []
        except (ValueError, AttributeError, OSError):
            known = []
    result = judge_pairs(
        prompts,
        answers_a,
        answers_b,
        client,
        cache=partial,
        known=known,
        parallel=args.parallel,
        quiet=args.quiet,
    )
    doc = {
        "run_a": args.run_a,
        "run_b": args.run_b,
        "step_a": step_a,
        "step_b": step_b,
        "prompts": args.prompts,
        "judge": client.describe(),
        "max_new_tokens": args.max_new_tokens,
        "prompt_templates": [PROMPT_TEMPLATE, PROMPT_TEMPLATE_CONTEXT],
        **result,
    }
    atomic_write_text(out, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    partial.unlink(missing_ok=True)

    se = "n/a" if result["win_rate_se"] is None else f"{result['win_rate_se']:.1f}"
    print(
        f"{args.run_a} over {args.run_b}: win-rate {result['win_rate']:.1f} % "
        f"(SE {se}) on {result['n_prompts']} prompts"
    )
    print(
        f"  judgements: {result['wins']} wins, {result['ties']} ties, {result['losses']} "
        f"losses; position A chosen {result['position_a_share']:.0f} %, "
        f"unparsed {result['unparsed']}"
    )
    print(f"wrote {out}")
    return 0

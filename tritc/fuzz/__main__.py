"""`python -m tritc.fuzz`: run a campaign, replay a finding, or (internally) be the campaign's worker."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tritc.fuzz", description="differential fuzzing of tritc (docs/FUZZING.md)")
    ap.add_argument("--minutes", type=float, help="stop after this long (default: 1, or --cases)")
    ap.add_argument("--cases", type=int, help="stop after this many cases")
    ap.add_argument("--seed", type=int, default=0, help="the first seed (the next cases take seed+1, ...)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where findings are written")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one case may take, compile and runs together")
    ap.add_argument("--target", default="graphs", choices=["graphs", "ir-text", "artifact", "stream"],
                    help="graphs: differential (the default); the others: a reader of untrusted bytes (inputs.py)")
    ap.add_argument("--engine", default="builtin", choices=["builtin", "atheris"],
                    help="for a reader of bytes: tritc's own mutator, or libFuzzer through atheris (if installed)")
    ap.add_argument("--replay", type=Path, help="check one written finding (its .onnx, with the .npz beside it)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        from .campaign import worker_main

        worker_main()
        return 0
    if args.target != "graphs":
        from .campaign import run_input_campaign
        from .inputs import run_target

        if args.replay:
            problem = run_target(args.target, args.replay.read_bytes())
            print(problem or "ok")
            return 1 if problem else 0
        minutes = args.minutes if args.minutes is not None or args.cases is not None else 1.0
        if args.engine == "atheris":
            from .inputs import run_atheris

            run_atheris(args.target, max(1, int(minutes * 60)), args.out, timeout=min(args.timeout, 10.0), seed=args.seed)
            return 0
        counts = run_input_campaign(args.target, args.seed, args.out, minutes=minutes, execs=args.cases,
                                    timeout=min(args.timeout, 10.0), say=lambda m: print(m, flush=True))
        return 1 if counts["finding"] else 0
    if args.replay:
        import onnx

        from .campaign import load_feeds
        from .oracle import check

        meta = json.loads(args.replay.with_suffix(".json").read_text()) if args.replay.with_suffix(".json").exists() else {}
        o = check(onnx.load(str(args.replay)), load_feeds(args.replay.with_suffix(".npz")), fpga=bool(meta.get("fpga")),
                  **meta.get("options", {}))
        print(f"{o.kind}{' in ' + o.phase if o.phase else ''}{': ' + o.message if o.message else ''}")
        return 1 if o.finding else 0
    from .campaign import run_campaign

    minutes = args.minutes if args.minutes is not None or args.cases is not None else 1.0
    counts = run_campaign(args.seed, args.out, minutes=minutes, cases=args.cases, timeout=args.timeout,
                          say=lambda m: print(m, flush=True))
    from .oracle import FINDINGS

    return 1 if any(counts[k] for k in FINDINGS) else 0


if __name__ == "__main__":
    sys.exit(main())

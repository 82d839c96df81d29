"""Peak memory of the LM head's part of a training step, on the CPU: the whole-batch
log-softmax the lab used before against the chunked head (core.engine.rollout.head_logprobs).

    .venv/bin/python benchmarks/head_memory.py [--rows 16] [--tokens 128]

Qwen2.5-0.5B's head (vocabulary 151,936, hidden 896) in float32 on rows x tokens completion
tokens (16 x 128: `gpu_check.py --prompts 2 --group-size 8 --max-new-tokens 128`), forward
and backward to the hidden states. Each way runs in its own process and reports the growth
of that process's peak resident size over what it held before (weights and hidden states
included in neither), beside the lab's estimate of the same part
(core.models.model_catalog). Prints one JSON line per way.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VOCAB, HIDDEN = 151_936, 896


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(way: str, rows: int, tokens: int) -> dict:
    import torch
    import torch.nn.functional as F

    from core.engine.rollout import head_logprobs

    torch.manual_seed(0)
    weight = torch.randn(VOCAB, HIDDEN) * 0.02  # [V, H]
    hidden = torch.randn(rows * tokens, HIDDEN, requires_grad=True)  # [N, H]
    y = torch.randint(0, VOCAB, (rows * tokens,))
    before = peak_bytes()
    t0 = time.process_time()
    if way == "whole":  # the lab before: logits, their log-softmax kept for backward
        logp = torch.log_softmax(F.linear(hidden, weight).float(), -1)  # [N, V]
        lp = logp.gather(1, y[:, None]).squeeze(1)
    else:
        lp, _ = head_logprobs(hidden, weight, None, y)
    lp.sum().backward()
    return {"way": way, "rows": rows, "tokens": tokens,
            "peak_growth_gb": round((peak_bytes() - before) / 1e9, 2),
            "cpu_seconds": round(time.process_time() - t0, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--way", choices=["whole", "chunked"], default=None, help="(internal)")
    args = p.parse_args()
    if args.way:
        print(json.dumps(measure(args.way, args.rows, args.tokens)))
        return 0
    from core.models.model_catalog import CATALOG_BY_ID, lm_head_bytes

    n = args.rows * args.tokens
    qwen = CATALOG_BY_ID["Qwen/Qwen2.5-0.5B-Instruct"].arch
    estimates = {"whole": n * VOCAB * 12,  # the lab's estimate before: logits (float32 on
                 # the CPU), a float32 copy and the log-softmax
                 "chunked": lm_head_bytes(n, qwen, 4)}  # the estimate now
    for way in ("whole", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--way", way, "--rows", str(args.rows),
                              "--tokens", str(args.tokens)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        result = json.loads(out) | {"estimate_gb": round(estimates[way] / 1e9, 2)}
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How close reference mode is to the authors' released code: the largest difference over real tokens between
nosink's final states and the released code's (tests/fixtures/released, made with transformers 4.44.2, float32,
eager), for every configuration the released code runs, per family, attention implementation and device.

    python benchmarks/released_fidelity.py [--device cpu|cuda] [--attn eager,sdpa] [--out FILE.json]

The test suite asserts <= 1e-5 for eager on the CPU (tests/test_released.py); this prints the actual figures,
and also those with the residual off (the paper's plan) to show what the residual is worth.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from nosink import Encoder, Plan

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "released"
ARGUMENTS = ("architecture", "mask_type", "num_unsink_layers", "num_bidir_layers", "unsink_layers", "bidir_layers")


def reference_plan(config: dict, *, residual: bool = True) -> Plan:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MASK3 runs as BACK
        fields = {name: config[name] for name in ARGUMENTS}
        return Plan.from_reference(**fields, res_connect=config["res_connect"] if residual else None)


def vanilla_floor(family: str, ids: torch.Tensor, mask: torch.Tensor, device: str) -> float:
    """Max |diff| over real tokens of this transformers' plain causal model against the fixtures' NONE without the
    residual (the released code's model run as is, on transformers 4.44.2): what two transformers versions differ by."""
    model = AutoModel.from_pretrained(FIXTURES / family, attn_implementation="eager", dtype=torch.float32)
    with torch.inference_mode():
        states = model.to(device).eval()(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = torch.as_tensor(np.load(FIXTURES / "states.npz")[f"{family}/NONE-MASK0-u0-b0-resNone/hidden_doc"])
    return float((states - expected.to(device))[mask.bool()].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--attn", default="eager,sdpa")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    meta = json.loads((FIXTURES / "meta.json").read_text())
    runs = [c for c in meta["configurations"] if c["status"] == "ok"]
    data = dict(np.load(FIXTURES / "states.npz"))
    tokenizer = AutoTokenizer.from_pretrained(FIXTURES / "tokenizers" / "gpt2")  # hidden_states never tokenizes
    result: dict = {"device": args.device, "configurations": len(runs), "families": {}}
    for family in sorted(meta["families"]):
        ids = torch.as_tensor(data[f"{family}/input_ids_doc"], device=args.device)
        mask = torch.as_tensor(data[f"{family}/attention_mask_doc"], device=args.device)
        real = mask.bool()
        floor = vanilla_floor(family, ids, mask, args.device)
        result["families"][f"{family}/vanilla_floor"] = floor
        print(f"{family:8} vanilla transformers (this version) vs the released NONE, residual off: {floor:.2e}")
        for attn in args.attn.split(","):
            model = AutoModel.from_pretrained(FIXTURES / family, attn_implementation=attn, dtype=torch.float32)
            encoder = Encoder.from_model(model.to(args.device).eval(), tokenizer)
            worst, worst_key, without = 0.0, "", []
            for config in runs:
                expected = torch.as_tensor(data[f"{family}/{config['key']}/hidden_doc"], device=args.device)
                got = encoder.with_plan(reference_plan(config)).hidden_states(ids, mask)
                diff = float((got - expected)[real].abs().max())
                if diff > worst:
                    worst, worst_key = diff, config["key"]
                if config["res_connect"] is not None:
                    paper = encoder.with_plan(reference_plan(config, residual=False)).hidden_states(ids, mask)
                    without.append(float((paper - expected)[real].abs().max()))
            row = {"max_abs_diff": worst, "at": worst_key, "residual_off_median_diff": float(np.median(without))}
            result["families"][f"{family}/{attn}"] = row
            off = row["residual_off_median_diff"]
            print(
                f"{family:8} {attn:6} {args.device}: max |diff| {worst:.2e} ({worst_key}); "
                f"with the residual off instead, median max |diff| {off:.2f}",
                flush=True,
            )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())

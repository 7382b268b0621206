"""A pretrained timm model on an ImageFolder (e.g. ImageNet val): profile, solve, quantize, evaluate.

    python examples/timm_imagefolder.py deit_tiny_patch16_224 /data/imagenet/val [--budget W4A8]

Needs internet the first time (timm downloads the weights) and a folder with one sub-directory
per class, in the class order the model was trained with (ImageNet val sorted by synset id).
The same as the CLI steps:

    mixqvit profile  --model deit_tiny_patch16_224 --pretrained --data VAL --calib 256 --out p.json
    mixqvit solve    p.json --budget W4A8 --out plan.json
    mixqvit quantize --model deit_tiny_patch16_224 --pretrained --data VAL --plan plan.json --eval
"""
import argparse
import json

from allocator import solve
from mixqvit import evaluate_top1, load_calibration, load_model, load_test, profile_loaded
from quant import quantize

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", help="timm model name, e.g. deit_tiny_patch16_224")
parser.add_argument("data", help="ImageFolder directory, e.g. ImageNet val")
parser.add_argument("--budget", default="W4A8")
parser.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                    help="published weights (default); --no-pretrained for a seeded random initialisation")
parser.add_argument("--model-kwargs", type=json.loads, default=None, help="timm constructor keywords as JSON")
parser.add_argument("--calib", type=int, default=256)
parser.add_argument("--test-limit", type=int, default=5000)
args = parser.parse_args()

loaded = load_model(args.model, pretrained=args.pretrained, model_kwargs=args.model_kwargs)  # uses the model's own timm data config
calib = load_calibration(loaded, args.data, args.calib)
test = load_test(loaded, args.data, limit=args.test_limit)
profile = profile_loaded(loaded, calib, bits=(4, 6, 8))
plan = solve(profile, budget=args.budget)
print(plan.summary())
print(f"float top-1     {evaluate_top1(loaded.model, test):.4f}")
print(f"quantized top-1 {evaluate_top1(quantize(loaded.model, plan, calib[0]), test):.4f}")

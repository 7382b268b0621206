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

from allocator import solve
from mixqvit import evaluate, load_calibration, load_model, load_test, profile_model, quantize_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("model", help="timm model name, e.g. deit_tiny_patch16_224")
parser.add_argument("data", help="ImageFolder directory, e.g. ImageNet val")
parser.add_argument("--budget", default="W4A8")
parser.add_argument("--calib", type=int, default=256)
parser.add_argument("--test-limit", type=int, default=5000)
args = parser.parse_args()

loaded = load_model(args.model, pretrained=True)  # uses the model's own timm data config
calib = load_calibration(loaded, args.data, args.calib)
test = load_test(loaded, args.data, limit=args.test_limit)
profile = profile_model(loaded, calib, bits=(4, 6, 8))
plan = solve(profile, budget=args.budget)
print(plan.summary())
print(f"float top-1     {evaluate(loaded.model, test):.4f}")
print(f"quantized top-1 {evaluate(quantize_model(loaded.model, plan, calib[0]), test):.4f}")

"""Mixed vs uniform precision on the shipped Fashion-MNIST ViT, in a dozen lines of Python.

    python examples/mixed_vs_uniform.py [--bits 4] [--calib 256] [--test-limit 2000]

The same steps as `mixqvit demo`, for one budget: profile on 256 training images, solve a
mixed plan no larger (size and BOPs) than the uniform model, quantize both, compare top-1.
"""
import argparse

from allocator import Budget, Plan, solve
from mixqvit import evaluate_top1, load_calibration, load_model, load_test, profile_loaded
from quant import PlanSwitcher

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--model", default="fmnist_vit")
parser.add_argument("--bits", type=int, default=4, help="uniform WbAb reference (default 4)")
parser.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")
parser.add_argument("--test-limit", type=int, default=2000)
args = parser.parse_args()

loaded = load_model(args.model)
calib = load_calibration(loaded, data=None, n=args.calib)  # class-balanced, from the training split
test = load_test(loaded, data=None, limit=args.test_limit)
profile = profile_loaded(loaded, calib, bits=(2, 3, 4, 6, 8))

uniform = Plan.uniform(profile, w_bits=args.bits, a_bits=args.bits)  # patch embed and head stay at 8
mixed = solve(profile, budget=Budget(size_mb=uniform.size_bytes / 1e6, bops=uniform.bops))
print(mixed.summary())

quantized = PlanSwitcher(loaded.model, calib[0])  # calibrate once, switch plans
for label, plan in (("uniform", uniform), ("mixed", mixed)):
    acc = evaluate_top1(quantized.apply(plan), test)
    print(f"{label:8s} W{args.bits}A{args.bits}-sized: top-1 {acc:.4f}, {plan.size_bytes / 1e6:.4f} MB, "
          f"{plan.bops / 1e9:.3f} GBOPs")

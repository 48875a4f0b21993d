"""Where a training step's time goes: a tf.profiler trace, summed by op type and by category.

    PYTHONPATH=. python bench/profile_step.py --variant step8 --calls 2
    PYTHONPATH=. python bench/profile_step.py --variant step8_fbn_bf16

Traces ``--calls`` calls of the chosen variant (after warm-up) with
``tf.profiler.experimental``, reads the XPlane file it writes and adds up the
time of every TensorFlow op executed on the host, by op type (``_Mkl``/
``_MklNative`` prefixes kept: they show which ops oneDNN runs) and by
category. Op times are summed over the executor's threads, so the total can
exceed the wall time when ops overlap; the shares are what matter.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C

CATEGORIES = [  # first match wins; matched against the op type
    ("conv backprop filter", r"Conv2DBackpropFilter"),
    ("conv backprop input", r"Conv2DBackpropInput"),
    ("conv forward", r"Conv2D|_FusedConv2D|DepthwiseConv"),
    ("batch-norm fused (fwd+grad)", r"FusedBatchNorm"),
    ("matmul (dense head)", r"MatMul|BatchMatMul"),
    ("reductions (BN moments/grads, bias grads)",
     r"^(_Mkl)?(Sum|Mean|BiasAddGrad|Max|ArgMax|Prod)$"),
    ("relu + relu grad", r"Relu"),
    ("element-wise arithmetic", r"^(_Mkl)?(Add|AddV2|AddN|Sub|Mul|RealDiv|Div|DivNoNan|Square|"
     r"SquaredDifference|Rsqrt|RsqrtGrad|Neg|Maximum|Minimum|BiasAdd|Sqrt|Reciprocal|Log|Exp|"
     r"Softmax|Select|SelectV2|ZerosLike|OnesLike|Fill|BroadcastTo|Tile|Cast|Pad|Transpose|"
     r"Reshape|Identity|Square|LogSoftmax|ClipByValue|Equal|Sign|Abs|GreaterEqual|Greater|Less|"
     r"LessEqual|_FusedMatMul|Slice|StridedSlice|StridedSliceGrad|ConcatV2|Pack|Shape|"
     r"ExpandDims|Squeeze|ShapeN|BroadcastGradientArgs|Range|Max)$"),
    ("pooling", r"Pool"),
    ("optimizer updates", r"ResourceApply|AssignVariable|AssignAdd|AssignSub|ReadVariable|"
     r"ResourceGather"),
    ("input pipeline / iterator", r"Iterator|Optional|Dataset"),
    ("control flow / function calls", r"While|If|PartitionedCall|StatefulPartitionedCall|"
     r"_Recv|_Send|NoOp|Const|Enter|Exit|Merge|Switch|NextIteration|LoopCond|_Arg|_Retval"),
]


def op_times(logdir: str, by_name: collections.Counter | None = None) -> collections.Counter:
    """Total picoseconds per op type, from the host plane of the newest XPlane file.

    ``by_name`` (optional) also gets the picoseconds per (op name, op type).
    """
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "plugins/profile/*/*.xplane.pb")))
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    totals: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # TF op events read "op_name:OpType"; other host events (Python, executor) skip.
                if ":" not in name or "::" in name or name.startswith(("$", "Eager")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                if not re.fullmatch(r"_?[A-Z][A-Za-z0-9_]*", op_type):
                    continue
                totals[op_type] += event.duration_ps
                if by_name is not None:
                    by_name[(name.rsplit(":", 1)[0], op_type)] += event.duration_ps
    return totals


def conv_table(by_name: collections.Counter, images: int) -> list[dict]:
    """Conv time per (stage, kernel size, direction), with the GFLOP/s it reached.

    The conv a TF op belongs to is found from the layer name in the op name
    (``v2_stack_1_block3_2_conv``; the stem is ``conv1_conv``); its multiply-adds
    per image come from the plan. Forward, input-gradient and filter-gradient
    convs each do the forward's multiply-adds.
    """
    from resnet_builder.model.architecture import resolve_architecture

    plan, _ = resolve_architecture(C.DEPTH, block_type=C.BLOCK, input_shape=C.SHAPE).plan()
    convs = {op.name: op for op in plan.ops if op.kind == "conv"}
    pattern = re.compile("|".join(sorted(map(re.escape, convs), key=len, reverse=True)))
    groups: dict = collections.defaultdict(lambda: {"ps": 0, "macs": 0, "layers": set()})
    for (name, op_type), ps in by_name.items():
        if "Conv2D" not in op_type:
            continue
        found = pattern.search(name)
        if not found:
            continue
        op = convs[found.group(0)]
        stage = re.match(r"v2_stack_(\d+)", op.name)
        direction = ("filter grad" if "BackpropFilter" in op_type else
                     "input grad" if "BackpropInput" in op_type else "forward")
        key = (f"stage {int(stage.group(1)) + 1}" if stage else "stem",
               f"{op.args['kernel_size']}x{op.args['kernel_size']}", direction)
        groups[key]["ps"] += ps
        groups[key]["layers"].add(op.name)
    rows = []
    for key, g in sorted(groups.items()):
        macs = sum(convs[n].macs for n in g["layers"])
        seconds = g["ps"] / 1e12
        rows.append({"stage": key[0], "kernel": key[1], "direction": key[2],
                     "ms_per_image": 1e3 * seconds / images,
                     "gflops": 2 * macs * images / seconds / 1e9 if seconds else 0.0})
    return rows


def categorise(totals: collections.Counter) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for op, ps in totals.items():
        bare = re.sub(r"^_Mkl(Native)?", "", op)
        for cat, pattern in CATEGORIES:
            if re.search(pattern, op) or re.search(pattern, bare):
                out[cat] += ps
                break
        else:
            out["other"] += ps
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", default="step8")
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import tensorflow as tf
    from train_variants import make_variant

    variant = make_variant(args.variant, args.batch)
    spc = int(re.match(r"step(\d+)", args.variant).group(1)) if args.variant.startswith("step") \
        else 1
    logdir = tempfile.mkdtemp(prefix="rb_profile_")
    tf.profiler.experimental.start(logdir)
    images, seconds = variant.run(args.calls * spc)
    tf.profiler.experimental.stop()
    by_name: collections.Counter = collections.Counter()
    totals = op_times(logdir, by_name)
    cats = categorise(totals)
    total = sum(totals.values())
    per_image_ms = 1e3 * seconds / images
    print(f"{args.variant}: {images} images in {seconds:.1f}s while tracing "
          f"({images / seconds:.1f}/s; tracing slows it a little); op time summed "
          f"{total / 1e12:.1f}s = {total / 1e12 / seconds:.2f} x wall")
    print("\nby category:")
    for cat, ps in cats.most_common():
        print(f"  {cat:44s} {100 * ps / total:5.1f}%  {ps / 1e9 / images:7.2f} ms/image")
    print(f"\ntop {args.top} op types:")
    for op, ps in totals.most_common(args.top):
        print(f"  {op:44s} {100 * ps / total:5.1f}%")
    convs = conv_table(by_name, images)
    print("\nconvolutions by stage, kernel and direction (op time; GFLOP/s while running):")
    for row in convs:
        print(f"  {row['stage']:8s} {row['kernel']:4s} {row['direction']:12s} "
              f"{row['ms_per_image']:6.2f} ms/image {row['gflops']:7.1f} GFLOP/s")
    payload = {"variant": args.variant, "convs": convs, "images": images, "seconds": seconds,
               "per_image_ms": per_image_ms, "op_ps": dict(totals), "category_ps": dict(cats)}
    C.write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()

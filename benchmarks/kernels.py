"""Two rewrites of the default network's convolutions that could have been cheaper on a CPU, timed
against TensorFlow's own convolution, one layer at a time, as one side-by-side worker runs it.

    python benchmarks/kernels.py --threads 1 --repeat 5

For each layer, a training step's share of it (forward, and the gradients a step needs: the weights',
and the input's where a layer below needs it) in mixed bfloat16 at batch 64:

- the first convolution (3x3, 1 -> 32 channels, 28x28 -> 26x26) as its nine shifted slices stacked
  and one (images x 9) @ (9 x 32) matrix product, instead of a convolution with one input channel;
- the two 5x5 stride-2 convolutions (24x24x32 -> 12x12x32, 8x8x64 -> 4x4x64) as a 3x3 stride-1
  convolution over the space-to-depth of the padded input (a 6x6 kernel with its last row and column
  zero, rearranged), so that oneDNN runs its stride-1 kernels in all three directions;
- the weight gradient of the 3x3 64 -> 64 convolution on 10x10 as a matrix product over its input's
  nine shifted slices (forward and input gradient still oneDNN's), through `tf.custom_gradient`.

Checks that each rewrite computes the same function, alternates the two ways `--repeat` times and prints
the median and range of milliseconds per step. No data needed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH = 64


def first_layer(tf):
    def conv(x, w):
        return tf.nn.conv2d(x, w, 1, "VALID")

    def slices(x, w):
        patches = tf.concat([x[:, i : i + 26, j : j + 26, :] for i in range(3) for j in range(3)], axis=-1)
        out = tf.matmul(tf.reshape(patches, (-1, 9)), tf.reshape(w, (9, 32)))
        return tf.reshape(out, (-1, 26, 26, 32))

    # The image has no gradient: nothing below the first layer learns.
    return (28, 1, 32, 3), conv, slices, False


def strided_layer(tf, size: int, channels: int):
    def conv(x, w):
        return tf.nn.conv2d(x, w, 2, "SAME")

    def space_to_depth(x, w):
        # SAME with a 5x5 kernel at stride 2 pads 1 before and 2 after; one more after makes it even.
        blocks = tf.nn.space_to_depth(tf.pad(x, [[0, 0], [1, 3], [1, 3], [0, 0]]), 2)
        kernel = tf.pad(w, [[0, 1], [0, 1], [0, 0], [0, 0]])  # 6x6, zero last row and column
        kernel = tf.reshape(kernel, (3, 2, 3, 2, channels, channels))
        kernel = tf.reshape(tf.transpose(kernel, (0, 2, 1, 3, 4, 5)), (3, 3, 4 * channels, channels))
        out = size // 2
        return tf.nn.conv2d(blocks, kernel, 1, "VALID")[:, :out, :out, :]

    return (size, channels, channels, 5), conv, space_to_depth, True


def weight_gradient_layer(tf):
    """The 3x3 64 -> 64 convolution on 10x10: oneDNN's forward and input gradient, but its weight
    gradient (the costliest kind of op in a step) as one (9 x 64 rows) @ (positions x 64) product over
    the nine shifted slices of the input."""

    def conv(x, w):
        return tf.nn.conv2d(x, w, 1, "VALID")

    @tf.custom_gradient
    def matmul_weight_gradient(x, w):
        def grad(upstream):
            dx = tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), w, upstream, [1, 1, 1, 1], "VALID")
            cols = tf.concat([x[:, i : i + 8, j : j + 8, :] for i in range(3) for j in range(3)], axis=-1)
            dw = tf.matmul(tf.reshape(cols, (-1, 9 * 64)), tf.reshape(upstream, (-1, 64)), transpose_a=True)
            return dx, tf.reshape(dw, (3, 3, 64, 64))

        return conv(x, w), grad

    return (10, 64, 64, 3), conv, matmul_weight_gradient, True


def step_ms(tf, shape, forward, input_gradient: bool, repeat_steps: int) -> tuple[float, float]:
    """Milliseconds of one training step's share of the layer; the largest difference from `conv`."""
    size, in_channels, out_channels, k = shape
    rng = tf.random.Generator.from_seed(0)
    x = tf.Variable(rng.uniform((BATCH, size, size, in_channels)))
    w = tf.Variable(rng.normal((k, k, in_channels, out_channels)) * 0.1)
    out_size = forward(tf.cast(x, tf.bfloat16), tf.cast(w, tf.bfloat16)).shape[1]
    upstream = tf.cast(rng.normal((BATCH, out_size, out_size, out_channels)), tf.bfloat16)
    targets = [w, x] if input_gradient else [w]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = forward(tf.cast(x, tf.bfloat16), tf.cast(w, tf.bfloat16))
            loss = tf.reduce_sum(tf.cast(y * upstream, tf.float32))
        return tape.gradient(loss, targets)

    step()  # tracing, oneDNN kernel set-up
    started = time.perf_counter()
    for _ in range(repeat_steps):
        result = step()
    _ = result[0].numpy()
    return (time.perf_counter() - started) * 1000 / repeat_steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 = one side-by-side worker)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50, help="steps timed per repeat")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    layers = {
        "first conv, 3x3 1->32 on 28x28": first_layer(tf),
        "5x5 stride 2, 32->32 on 24x24": strided_layer(tf, 24, 32),
        "5x5 stride 2, 64->64 on 8x8": strided_layer(tf, 8, 64),
        "3x3 64->64 on 10x10, weight grad": weight_gradient_layer(tf),
    }
    print(f"TensorFlow {tf.__version__}, {args.threads} thread(s), batch {BATCH}, mixed bfloat16")
    print(f"{'layer':<34} {'conv ms':>16} {'rewrite ms':>16} {'rewrite / conv':>15} {'max diff':>9}")
    for name, (shape, conv, rewrite, input_gradient) in layers.items():
        size, in_channels, _, k = shape
        rng = tf.random.Generator.from_seed(1)
        x = tf.cast(rng.uniform((BATCH, size, size, in_channels)), tf.bfloat16)
        w = tf.cast(rng.normal((k, k, in_channels, shape[2])) * 0.1, tf.bfloat16)
        # bfloat16 sums in another order: compare in float32 against the output's own scale.
        a, b = (tf.cast(f(x, w), tf.float32) for f in (conv, rewrite))
        diff = float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(a)))
        times: dict[str, list[float]] = {"conv": [], "rewrite": []}
        for _ in range(args.repeat):
            times["conv"].append(step_ms(tf, shape, conv, input_gradient, args.steps))
            times["rewrite"].append(step_ms(tf, shape, rewrite, input_gradient, args.steps))
        ratios = [r / c for r, c in zip(times["rewrite"], times["conv"], strict=True)]
        cells = [
            f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
            for v in (times["conv"], times["rewrite"])
        ]
        print(
            f"{name:<34} {cells[0]:>16} {cells[1]:>16} "
            f"{statistics.median(ratios):>6.2f} ({min(ratios):.2f}-{max(ratios):.2f}) {diff:>8.1e}"
        )


if __name__ == "__main__":
    main()

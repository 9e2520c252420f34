"""CUDA graphs for the training step (--cuda-graphs; on under --fast on one CUDA GPU).

A CIFAR ResNet's training step at batch 128 is several hundred small kernels. On a large
GPU launching them takes longer than running them: with default flags one_resnet-32 ran at
7% of the H200's fp32 matmul rate. A CUDA graph records one whole step (forward, objective,
backward, SGD update and the hit counts) and replays it with a single launch.

A replay repeats what was recorded, so whatever the step takes from Python is fixed when it
is recorded: the batch's shape and the learning rate. The caller passes these as the `key`,
and a new graph is recorded whenever the key changes (the previous one is dropped). The
objective's epoch-dependent weight (`objective.rampup(epoch)`, the only way an objective may
depend on the epoch; see methods/base.py) is not: the engine gives the step a 0-dim tensor
that it sets before each epoch and the objective reads, so a 300-epoch ONE run records one
graph per learning rate (3), not one per ramp-up epoch (about 80). The engine runs the last,
smaller batch of an epoch eagerly (the same step, unrecorded) rather than record a graph for
it. (The learning rate stays a recorded constant: as a tensor, SGD's update would need the
fused kernel, whose bits against the default update are not yet checked on a GPU.)

The first steps of a process run eagerly on a side stream, as PyTorch's recipe for whole-
network capture asks, so that cuDNN's autotuning, library workspaces and the optimizer's
momentum buffers exist before anything is recorded. They are ordinary training steps.
"""
import torch

WARMUP_STEPS = 3


class GraphedStep:
    """`step(key, images, targets, *constants)` returns what `function(images, targets,
    *constants)` returns (a tuple of tensors), by replaying a CUDA graph recorded for `key`.
    The key must name every value the step takes from Python, `constants` and the batch's
    shape included: a replay reuses what the graph was recorded with.

    The returned tensors are the graph's own outputs, overwritten by the next replay: read
    them (enqueue work on them) before calling again, as a training loop does."""

    def __init__(self, function, warmup_steps=WARMUP_STEPS):
        self.function = function
        self.warmup_left = warmup_steps
        self.key = self.graph = self.inputs = self.outputs = None
        self.recorded = self.replayed = 0  # graphs recorded and steps replayed so far
        self.stream = None

    def __call__(self, key, images, targets, *constants):
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self.on_side_stream(images, targets, *constants)
        if key != self.key:
            self.record(images, targets, constants, key)
        self.inputs[0].copy_(images)
        self.inputs[1].copy_(targets)
        self.graph.replay()
        self.replayed += 1
        return self.outputs

    def report(self):
        return (f'CUDA graphs: {self.replayed} steps replayed from {self.recorded} recorded '
                'graph(s), one per learning rate')

    def on_side_stream(self, images, targets, *constants):
        current = torch.cuda.current_stream(images.device)
        if self.stream is None:
            self.stream = torch.cuda.Stream(images.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            outputs = self.function(images, targets, *constants)
        current.wait_stream(self.stream)
        return outputs

    def record(self, images, targets, constants, key):
        self.graph = self.outputs = None  # the old graph's memory goes back to the allocator
        self.inputs = (images.clone(), targets.clone())  # clone keeps the memory format
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.outputs = self.function(*self.inputs, *constants)
        self.graph, self.key = graph, key
        self.recorded += 1

"""CL-ILR's heads (Song and Chai, NeurIPS 2018): ONE's layout without a gate, where the shared
layers' gradient is rescaled by 1/H (the paper's backpropagation rescaling). The objective and
its sources are in methods/clilr.py."""
import torch

from .branched import Branched
from .one_resnet import ONEResNet
from .output import ModelOutput

__all__ = ['ScaleGradient', 'RescaledHeads', 'CLILRResNet', 'CLILRHeads']


class ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by `scale`. Written in
    the form torch.func can batch (setup_context, generate_vmap_rule), for packed runs."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x, scale):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.scale = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class RescaledHeads:
    """The forward pass of CL-ILR over ONE's layout without a gate: returns ModelOutput(head
    logits (H, B, classes), their mean (B, classes)); with `rescale`, the trunk's gradient is
    divided by H."""
    rescale = True

    def forward(self, x):
        x = self.trunk(x)
        if self.rescale:
            x = ScaleGradient.apply(x, 1.0 / len(self.branches))
        logits = torch.stack([branch(x) for branch in self.branches])
        return ModelOutput(logits, logits.mean(0))


class CLILRResNet(RescaledHeads, ONEResNet):
    """CL-ILR's heads on the CIFAR ResNet, split as ONE's (-a clilr_resnet)."""

    def __init__(self, depth, num_classes=10, num_branches=4, rescale=True, depth_rule='6n+2'):
        super().__init__(depth, num_classes, num_branches, branch_point='stage3', gate='average',
                         depth_rule=depth_rule)
        self.rescale = rescale


class CLILRHeads(RescaledHeads, Branched):
    """CL-ILR's heads on any other backbone, split at its last stage (set `rescale` after
    building, as Branched's keywords go to the backbone)."""

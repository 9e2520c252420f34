"""KD's model: a student trained beside a frozen teacher (methods/kd.py has the objective)."""
import torch
import torch.nn as nn

from .output import ModelOutput, as_output

__all__ = ['StudentTeacher', 'EnsembleOf']


class EnsembleOf(nn.Module):
    """forward(x) returns the ensemble logits of a model of several members (a ModelOutput's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return as_output(self.model(x)).ensemble


class StudentTeacher(nn.Module):
    """forward(x) returns ModelOutput(members=student logits (1, B, C),
    extras={'teacher': teacher logits (B, C)}).

    The teacher is frozen: no parameter requires grad, it runs under no_grad, and it stays in
    eval mode whatever train() is called with."""

    def __init__(self, student, teacher):
        super().__init__()
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x):
        student = self.student(x)
        with torch.no_grad():
            teacher = self.teacher(x)
        return ModelOutput(student.unsqueeze(0), extras={'teacher': teacher.to(student.dtype)})

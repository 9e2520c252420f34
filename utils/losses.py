"""Pieces the methods' objectives share.

An objective maps (model output, targets, epoch) to the loss to minimise."""
import torch.nn.functional as F


def distillation_kl(student_logits, teacher_logits, temperature):
    """sum over students of T^2 * KL(p_teacher || p_student), summed over the batch.

    The teacher is detached: no gradient reaches it through this term.
    """
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum()
    return kl * temperature ** 2


def branch_cross_entropy(logits, targets):
    """sum over branches and samples of CE(z_i, y); logits (m, B, C)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.repeat(len(logits)), reduction='sum')


"""One training step, one evaluation pass, and the sums they keep on the device."""
from contextlib import nullcontext

import torch

# Evaluation batches between two looks at the stop flag under torchrun, where each look is a
# collective and a host synchronisation; one process looks after every batch (no cost).
STOP_CHECK_EVERY = 10


def autocast(amp, device):
    """The mixed-precision context for --amp off|bf16|fp16. Without autocast's cache of cast
    weights, which PyTorch asks for under CUDA graphs (utils/graphs.py); each weight of these
    models is used once a forward pass, so the cache saved nothing."""
    if amp == 'off':
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == 'bf16' else torch.float16,
                          cache_enabled=False)


def objective_kwargs(batch_size, weight):
    """An objective's keywords: the batch size, and the epoch's ramp-up weight as a tensor
    where one is given (a CUDA graph's input; methods/base.py, Method.objective)."""
    return {'batch_size': batch_size, **({} if weight is None else {'weight': weight})}


def train_step(model, objective, optimizer, scaler, images, targets, epoch, batch_size, amp,
               weight=None):
    """One SGD step on this rank's images. `batch_size` is the global batch over the world
    size, so DDP's gradient average is the global batch mean. Returns (output, loss summed
    over this rank's images), both left on the device."""
    with autocast(amp, images.device):
        output = model(images)
        loss = objective(output, targets, epoch, **objective_kwargs(batch_size, weight))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return output, loss.detach() * batch_size


class Meters:
    """Sums kept on the device (no host synchronisation per step): loss, hits (top-1 and
    top-5 per column, shape (2, columns)), images. For a pack of k runs (utils/pack.py) the
    loss, hits and the non-finite flag have a leading dimension of k, one row a run, and
    member(i) is run i's meters (views of those rows); a single run's member(0) is itself."""

    def __init__(self, num_scores, device, members=None):
        self.members = members
        runs = () if members is None else (members,)
        self.loss = torch.zeros(runs, dtype=torch.float64, device=device)
        self.correct = torch.zeros(*runs, 2, num_scores, dtype=torch.int64, device=device)
        self.count = torch.zeros((), dtype=torch.int64, device=device)
        self.nonfinite = torch.zeros(runs, dtype=torch.bool, device=device)

    def member(self, i):
        """Run i's meters of a pack's: views, so loading into them fills row i."""
        if self.members is None:
            return self
        view = Meters.__new__(Meters)
        view.members = None
        view.loss, view.correct, view.nonfinite = self.loss[i], self.correct[i], self.nonfinite[i]
        view.count = self.count
        return view

    def update(self, loss_sum, correct, count):
        self.loss += loss_sum
        self.correct += correct
        self.count += count
        self.nonfinite |= ~torch.isfinite(loss_sum)

    def state(self):
        return {'loss': self.loss, 'correct': self.correct, 'count': self.count}

    def copy(self):
        """Meters holding the same sums, to reduce over the ranks while these go on."""
        other = Meters.__new__(Meters)
        other.members = self.members
        other.loss, other.correct, other.count, other.nonfinite = (
            t.clone() for t in (self.loss, self.correct, self.count, self.nonfinite))
        return other

    def load(self, state):
        self.loss.copy_(state['loss'])
        # a checkpoint written before top-5 was counted holds the top-1 row alone
        saved = state['correct'].view(-1, self.correct.shape[-1])
        self.correct[:len(saved)].copy_(saved)
        self.count.copy_(state['count'])

    def reduce(self, world):
        for tensor in (self.loss, self.correct, self.count):
            world.all_reduce(tensor)
        return self

    def summary(self, names):
        """{'loss': mean loss, 'acc_<name>': top-1 % per column, 'acc_mean': of the members,
        'acc5_<name>': top-5 % per column}."""
        count = max(self.count.item(), 1)
        top1, top5 = (self.correct.double() * 100 / count).tolist()
        out = {'loss': self.loss.item() / count}
        out.update({f'acc_{n}': a for n, a in zip(names, top1)})
        member_accs = [out[f'acc_{n}'] for n in member_columns(names)]
        out['acc_mean'] = sum(member_accs) / len(member_accs)
        out.update({f'acc5_{n}': a for n, a in zip(names, top5)})
        return out


def member_columns(names):
    """The numbered columns (branches, networks, heads): what 'mean' averages. A teacher, a
    leader or an ensemble column is not averaged in; without numbered columns, the first."""
    return [n for n in names if n.isdigit()] or names[:1]


def scorer(method, objective, epoch, names, packed=False):
    """score(output, targets) -> (the loss summed over the images, the hits of every column
    (2, columns)): what the meters count of a batch. `packed`: of a pack's stacked output and
    targets (k, B), each with a leading dimension of k."""
    def score(output, targets):
        return (objective(output, targets, epoch) * len(targets),
                method.correct(output, targets, names))
    if not packed:
        return score
    from .pack import over_members   # pack.py imports this module
    return lambda output, targets: over_members(score, output, targets)


@torch.inference_mode()
def evaluate(model, loader, score, names, world, amp='off', stop=None, members=None):
    """Test loss and top-1 of every column over the loader's images (all ranks' shares),
    each batch counted by `score` (scorer()). A pack of `members` runs: a list of their
    summaries. Returns None when `stop` (a StopRequest) is set between two batches."""
    model.eval()
    meters = Meters(len(names), loader.device, members)
    every = STOP_CHECK_EVERY if world.distributed else 1
    with autocast(amp, loader.device):
        for number, (images, targets) in enumerate(loader.batches(), 1):
            meters.update(*score(model(images), targets), targets.shape[-1])
            if stop is not None and number % every == 0 and stop.requested(world):
                return None
    meters.reduce(world)
    if members is None:
        return meters.summary(names)
    return [meters.member(i).summary(names) for i in range(members)]

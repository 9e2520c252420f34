"""report.py's groups: runs of one method, variant, network and dataset are averaged; groups
must share a schedule (and training data) to be averaged or compared; their names."""
import statistics
from dataclasses import dataclass, field

from methods import METHODS
from methods.base import describe_value
from methods.networks import backbone_of, network_name
from methods.published import lookup
from .runs import OFFICIAL, Refusal

def group_runs(runs):
    groups = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    return dict(sorted(groups.items(), key=lambda item: sort_key(item[0])))


def sort_key(key):
    """Datasets, then networks, then methods in the registry's order, plain before variants."""
    method, arch, depth, dataset, flags = key
    order = list(METHODS).index(method) if method in METHODS else len(METHODS)
    return (dataset, backbone_of(arch), depth, order, method, bool(flags), str(flags))


def method_label(method, member, flags):
    """e.g. 'ONE', 'ONE-E (T=4)': the method, '-E' for its ensemble, its varied flags."""
    known = METHODS.get(method)
    title = (known.title if known else str(method)) + ('-E' if member == 'ens' else '')
    texts = known.describe_flags(flags) if known else [f'{k}={v}' for k, v in flags]
    return title + (f' ({", ".join(texts)})' if texts else '')


def group_name(key):
    method, arch, depth, dataset, flags = key
    return f'{method_label(method, "1", flags)} {network_name(arch, depth)} {dataset}'


def describe_schedule(run):
    epochs, milestones, gamma, lr, start = run.schedule
    text = f'{epochs} epochs, lr {describe_value(lr)}'
    if milestones:
        text += f', x{describe_value(gamma)} at {"/".join(map(str, milestones))}'
    if start:
        text += f', trained from epoch {start + 1} (--start-epoch {start})'
    subset, copy = run.data
    text += f', first {subset} training images' if subset else ''
    return text + (f', {describe_copy(copy)}' if copy != OFFICIAL else '')


def describe_copy(copy):
    """How tables name a run's data: 'official' or an unofficial copy by its sha256."""
    return copy if copy == OFFICIAL else f'unofficial copy (sha256 {copy[:12]}...)'


def check_within_groups(groups):
    for key, runs in groups.items():
        for other in runs[1:]:
            if (other.schedule, other.data) != (runs[0].schedule, runs[0].data):
                raise Refusal(f'runs of {group_name(key)} differ in schedule or training data: '
                              f'{runs[0].folder} ({describe_schedule(runs[0])}) vs '
                              f'{other.folder} ({describe_schedule(other)}); refusing to '
                              'average them')


def check_across_groups(groups, allow_mixed):
    firsts = [(key, runs[0]) for key, runs in groups.items()]
    for key, run in firsts[1:]:
        first_key, first = firsts[0]
        if (run.schedule, run.data) != (first.schedule, first.data) and not allow_mixed:
            raise Refusal(f'{group_name(first_key)} ({describe_schedule(first)}) and '
                          f'{group_name(key)} ({describe_schedule(run)}) differ in schedule or '
                          'training data; pass --allow-mixed-schedules to report them side '
                          'by side')


def duplicate_seed_warnings(groups):
    warnings = []
    for key, runs in groups.items():
        seeds = [run.seed for run in runs if run.seed is not None]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
            folders = ', '.join(run.folder for run in runs if run.seed == seed)
            warnings.append(f'{group_name(key)}: seed {seed} appears more than once ({folders})')
    return warnings


@dataclass
class Result:
    key: tuple
    member: str
    runs: list
    errors: list
    epochs_selected: list
    published: list = field(default_factory=list)
    top5_errors: list = None   # at the same epochs; None unless every run recorded top-5

    @property
    def label(self):
        """What tables call this network: 'ONE', 'ONE-E (m=2)'."""
        run = self.runs[0]
        return method_label(self.key[0], self.member, run.variant + run.unchecked)

    @property
    def n(self):
        return len(self.errors)

    @property
    def mean(self):
        return statistics.fmean(self.errors)

    @property
    def std(self):
        """Sample std (ddof=1); None for a single run."""
        return statistics.stdev(self.errors) if self.n > 1 else None

    @property
    def top5_mean(self):
        return statistics.fmean(self.top5_errors) if self.top5_errors else None

    @property
    def top5_std(self):
        return statistics.stdev(self.top5_errors) if self.top5_errors and self.n > 1 else None

    @property
    def diff(self):
        return self.mean - self.published[0].error if self.published else None


def selected_index(run, member, best):
    """The row of the last epoch, or of this network's best top-1 test epoch."""
    errors = run.errors(member)
    return min(range(len(errors)), key=errors.__getitem__) if best else len(errors) - 1


def top5_at(runs, member, picked):
    """The top-5 errors at the selected rows, or None if a run did not record top-5."""
    top5 = [run.top5_errors(member) for run in runs]
    return None if None in top5 else [errors[i] for errors, i in zip(top5, picked)]


def summarise(groups, best):
    results = []
    for key, runs in groups.items():
        method, arch, depth, dataset, _ = key
        members = [m for m in runs[0].members() if all(m in run.members() for run in runs)]
        for member in members:
            picked = [selected_index(run, member, best) for run in runs]
            published = lookup(method, runs[0].variant, backbone_of(arch), depth, dataset, member)
            results.append(Result(key, member, runs,
                                  [run.errors(member)[i] for run, i in zip(runs, picked)],
                                  [int(run.rows[i]['epoch']) for run, i in zip(runs, picked)],
                                  published, top5_at(runs, member, picked)))
    return results

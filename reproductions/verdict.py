"""Whether a row of a table is reproduced, in issue 25's terms: every column's mean within
TOLERANCE points of its published number, and the gain of ONE (of each method's deployed
network) over the baseline within TOLERANCE points of the published gain.

A row is judged only when all its runs have finished, each column over at least MIN_SEEDS
seeds, trained as published (each method's own schedule, every training image from the
first epoch), with a published baseline and a published number for a method beside it.
Otherwise it is `incomplete` (runs or seeds missing) or `not judged` (why is said)."""
from dataclasses import dataclass

from methods.base import describe_value
from methods.published import reference_setup
from reports.runs import OFFICIAL, SCHEDULE_KEYS, hashable, same_value

TOLERANCE = 1.0   # points of top-1 error
MIN_SEEDS = 2
REPRODUCED, NOT_REPRODUCED = 'reproduced', 'not reproduced'
INCOMPLETE, NOT_JUDGED = 'incomplete', 'not judged'


@dataclass
class Check:
    what: str            # a column's label, or 'gain of ONE over the baseline'
    ours: float
    published: float
    source: object = None   # the methods.published entry (a column's), for its footnote

    @property
    def diff(self):
        return self.ours - self.published

    @property
    def passed(self):
        return round(abs(self.diff), 9) <= TOLERANCE

    def failure(self):
        return f'{self.what} {self.ours:.2f} vs published {self.published:.2f}'


@dataclass
class Verdict:
    state: str
    reason: str


def is_baseline(result):
    return result.key[0] == 'baseline' and result.member == '1' and not result.key[4]


def column_check(result):
    """A column's mean against its first published entry; None where nothing is published."""
    if not result.published:
        return None
    return Check(result.label, result.mean, result.published[0].error, result.published[0])


def column_checks(results):
    return [check for check in map(column_check, results) if check]


def gain_checks(results, baseline):
    """The gain of each method's deployed network (member 1) over the baseline, ours against
    the published one, where both numbers are published."""
    return [Check(f'gain of {r.label} over the baseline', baseline.mean - r.mean,
                  baseline.published[0].error - r.published[0].error)
            for r in results if r.member == '1' and not is_baseline(r) and r.published]


def protocol_differences(results):
    """How the runs were trained otherwise than each method's published setting (its
    reference setup's schedule, all training images, from epoch 1)."""
    found = []
    for run in (run for result in results for run in result.runs):
        reference = reference_setup(run.method, run.args['arch'])
        for key in SCHEDULE_KEYS:
            ours, theirs = hashable(run.args.get(key)), hashable(reference.get(key))
            if not same_value(ours, theirs):
                found.append(f'{key} {describe_value(ours)} (published setting: '
                             f'{describe_value(theirs)})')
        if run.data[0]:
            found.append(f'the first {run.data[0]} training images')
        if run.start:
            found.append(f'from epoch {run.start + 1}')
    return sorted(set(found))


def judge(results, asked, finished):
    """The verdict of one row: RESULTS (reports.groups.summarise over its finished runs),
    ASKED runs of which FINISHED have finished."""
    if finished < asked or not asked:
        return Verdict(INCOMPLETE, f'{finished} of {asked} runs finished' if asked
                       else 'not run yet')
    if not results:
        return Verdict(INCOMPLETE, 'no finished run could be read (the report lists why)')
    differences = protocol_differences(results)
    if differences:
        return Verdict(NOT_JUDGED, 'trained otherwise than published: ' + ', '.join(differences))
    few = [f'{r.label} has {r.n}' for r in results if r.n < MIN_SEEDS]
    if few:
        return Verdict(INCOMPLETE, f'{", ".join(few)} seed(s); a verdict needs {MIN_SEEDS}')
    baseline = next((r for r in results if is_baseline(r)), None)
    if baseline is None or not baseline.published:
        return Verdict(NOT_JUDGED, 'methods/published.py has no baseline number for this row')
    gains = gain_checks(results, baseline)
    if not gains:
        return Verdict(NOT_JUDGED, 'methods/published.py has no number for a method beside the '
                       'baseline in this row')
    copy = data_copy_note(results)
    failed = [check.failure() for check in column_checks(results) + gains if not check.passed]
    if failed:
        return Verdict(NOT_REPRODUCED, f'more than {TOLERANCE:.1f} point off: '
                       + '; '.join(failed) + copy)
    return Verdict(REPRODUCED, f'every number within {TOLERANCE:.1f} point of the published'
                   + copy)


def data_copy_note(results):
    """Where the runs trained on a copy of the data other than the official release (its
    pixels may differ: CIFAR-10 rebuilt from JPEGs), the verdict says so."""
    copies = sorted({run.data_copy for result in results for run in result.runs} - {OFFICIAL})
    if not copies:
        return ''
    return (f', on an unofficial copy of the data (sha256 {", ".join(c[:12] for c in copies)}'
            '...; docs/REPRODUCE.md)')

"""reproduce.py --list: every table, what each row trains and the published numbers it meets."""
from reports.tables import fmt_published, source_label
from .columns import row_plan
from .tables import TABLES


def published_text(columns, numbers):
    """'baseline 31.18 [1], ONE 26.61 [1], ONE-E -': each column's first published number and
    its footnote, numbering in NUMBERS ({source label: number}) the sources not yet there."""
    return ', '.join(
        f'{column.label} {fmt_published(column.published[0])} '
        f'[{numbers.setdefault(source_label(column.published[0]), len(numbers) + 1)}]'
        if column.published else f'{column.label} -' for column in columns)


def row_line(row, plan, numbers):
    scripts = ', '.join(f'{script} {epochs}' for script, epochs in plan.epochs.items())
    return [f'  --rows {row.name}: {plan.columns[0].network}, {plan.runs_per_seed} runs per '
            f'seed (epochs: {scripts})',
            f'    published top-1 error %: {published_text(plan.columns, numbers)}']


def listing():
    """The text of --list."""
    lines, numbers = [], {}
    for table in TABLES.values():
        lines += [f'{table.name}: {table.title} (-d {table.dataset})']
        for row in table.rows:
            lines += row_line(row, row_plan(table, row), numbers)
    lines += ['', 'Sources:'] + [f'[{i}] {label}' for label, i in numbers.items()]
    return '\n'.join(lines) + '\n'

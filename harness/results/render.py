"""A comparison for people: the terminal table of `xenhil run` and `xenhil compare`,
and the label names and CSS classes the HTML pages use."""

from __future__ import annotations

from .compare import UNLABELLED, Comparison, Label, LabelKind, exit_code

# Longest detail (with the message) on one terminal line.
DETAIL_WIDTH = 120


def css_class(kind: LabelKind) -> str:
    """e.g. "label-never-passed"."""
    return "label-" + kind.value.lower().replace(" ", "-")


def short_text(label: Label) -> str:
    """What the label cell shows: nothing for a pass or a plain skip."""
    return "" if label.kind in UNLABELLED else label.kind.value


def render_text(comparison: Comparison) -> str:
    against = (f"baseline {comparison.baseline_id}" if comparison.baseline_id
               else "no baseline")
    lines = [f"run {comparison.run_id} against {against}: {comparison.verdict} "
             f"(exit {exit_code(comparison.verdict)})"]
    counts = {kind: len(comparison.with_kind(kind)) for kind in LabelKind}
    lines.append(", ".join(f"{count} {kind.value.lower()}"
                           for kind, count in counts.items() if count) or "no tests")
    labelled = sorted(((test_id, label) for test_id, label in comparison.labels.items()
                       if label.kind not in UNLABELLED),
                      key=lambda item: list(LabelKind).index(item[1].kind))
    if labelled:
        kind_width = max(len(label.kind.value) for _, label in labelled)
        test_width = max(len(test_id) for test_id, _ in labelled)
        lines.append("")
        for test_id, label in labelled:
            detail = " — ".join(part for part in (label.detail, label.bug_url, label.message)
                                if part)
            if len(detail) > DETAIL_WIDTH:
                detail = detail[:DETAIL_WIDTH - 1] + "…"
            lines.append(f"{label.kind.value:<{kind_width}}  {test_id:<{test_width}}  "
                         f"{detail}".rstrip())
    flags = comparison.figure_flags
    if flags:
        lines += ["", "figures worse than their history" + (
            "" if comparison.figures_gate else " (warnings, not failing the run)") + ":"]
        lines += [f"  {check.test_id}: {check.name} {check.value:g} {check.unit}, median "
                  f"{check.median:g} {check.unit} of {check.runs} run"
                  f"{'s' if check.runs != 1 else ''} ({check.change}, tolerance "
                  f"{check.tolerance.describe(check.unit)})" for check in flags]
    if comparison.expired:
        lines += ["", "expired known issues (no longer excuse a failure):"]
        lines += [f"  {entry.bug} ({entry.test}): expired on {entry.expires}"
                  for entry in comparison.expired]
    return "\n".join(lines) + "\n"

"""The kernel matrix's report: which variant each tool uses on each kernel,
and which shipped variants were never attached and checked anywhere.

Read by scripts/kernel_lab.py (plain Python: no pytest, no pytrace import
needed) from the JSON each run wrote (conftest.py, --matrix-results)."""

from __future__ import annotations


def _outcome(entry: dict) -> str:
    if entry.get("failed"):
        return "FAILED"
    if entry.get("passed"):
        return "ok"
    return "skipped"


def coverage_gaps(runs: dict[str, dict]) -> list[str]:
    """Variants (tool:hook) that failed somewhere, or passed nowhere."""
    keys: set[str] = set()
    for run in runs.values():
        keys.update(run.get("variants", {}))
    gaps = []
    for key in sorted(keys):
        outcomes = {name: _outcome(run.get("variants", {}).get(key, {})) for name, run in runs.items()}
        failed = [name for name, o in outcomes.items() if o == "FAILED"]
        if failed:
            gaps.append(f"{key} failed on {', '.join(failed)}")
        elif "ok" not in outcomes.values():
            gaps.append(f"{key} passed on no kernel")
    return gaps


def _kernels(runs: dict[str, dict]) -> list[str]:
    """Run names, oldest kernel first."""
    return sorted(runs, key=lambda n: tuple(runs[n].get("version", (99, 99))))


def _label(name: str, run: dict) -> str:
    """5.10, 6.1, 6.12 (the lab's names), or the host's major.minor."""
    if name != "host":
        return name
    return "host " + ".".join(str(v) for v in run.get("version", ())[:2])


def render_table(runs: dict[str, dict]) -> str:
    """Markdown, one row per tool: its floor (the oldest kernel any of its
    variants runs on) and, per kernel, the variant it used by default, then
    each variant with the kernels where it was attached and checked."""
    names = _kernels(runs)
    floors: dict[str, str] = {}
    tools: dict[str, list[str]] = {}
    for run in runs.values():
        floors.update(run.get("floors", {}))
        for key in run.get("variants", {}):
            tool, hook = key.split(":", 1)
            if hook not in tools.setdefault(tool, []):
                tools[tool].append(hook)
    head = ("| tool | floor | " + " | ".join(_label(n, runs[n]) for n in names)
            + " | variants: floor, kernels where attached and checked |")
    lines = [head, "|" + "---|" * (3 + len(names))]
    for tool in sorted(tools):
        tool_floor = min((floors.get(f"{tool}:{h}", "?") for h in tools[tool]),
                         key=lambda v: tuple(int(x) for x in v.split(".")) if v != "?" else (99, 99))
        cells = []
        for n in names:
            default = runs[n].get("defaults", {}).get(tool)
            cells.append(default[1] if default and default[1] else ("none" if default else "–"))
        checked = []
        for hook in tools[tool]:
            ok = [_label(n, runs[n]) for n in names
                  if _outcome(runs[n].get("variants", {}).get(f"{tool}:{hook}", {})) == "ok"]
            checked.append(f"{hook} {floors.get(f'{tool}:{hook}', '?')}+: {', '.join(ok) or 'NONE'}")
        lines.append(f"| {tool} | {tool_floor} | " + " | ".join(cells) + " | " + "; ".join(checked) + " |")
    return "\n".join(lines)

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


def render_table(runs: dict[str, dict]) -> str:
    """Markdown: per tool, its variants with where each was checked, and the default per kernel."""
    names = list(runs)
    tools: dict[str, list[str]] = {}
    for run in runs.values():
        for key in run.get("variants", {}):
            tool, hook = key.split(":", 1)
            if hook not in tools.setdefault(tool, []):
                tools[tool].append(hook)
    head = "| tool | variant | " + " | ".join(f"{n} ({runs[n].get('release', '?')})" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + len(names))]
    for tool in sorted(tools):
        for hook in tools[tool]:
            cells = []
            for n in names:
                entry = runs[n].get("variants", {}).get(f"{tool}:{hook}")
                cell = _outcome(entry) if entry else "–"
                default = runs[n].get("defaults", {}).get(tool)
                if default and default[1] == hook:
                    cell += " (default)"
                cells.append(cell)
            lines.append(f"| {tool} | {hook} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

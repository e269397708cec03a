"""What the packet-drop tools (tcpdrop, skbdrop) share on the Python side;
src/bpf/kfreeskb.h is the kernel half.

- drop reason names: enum skb_drop_reason of the running kernel (its BTF),
  without the SKB_DROP_REASON_ prefix;
- kernel stacks of the drop, symbolized, with the frames of the tracing
  machinery above the function that freed the packet removed (the stack is
  taken whole in the kernel: how many frames the hook adds differs between
  tp_btf, raw_tp and classic tracepoints).
"""

from __future__ import annotations

from typing import Iterable

from .kernel_btf import drop_reasons
from .ksyms import kernel_symbols

# what every variant of the two needs (features.NEEDS): skb:kfree_skb with its reason
DROP_REASONS = "kfree_skb drop reasons"

TRACING_PREFIXES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "trace_call_bpf",
                    "perf_trace_", "perf_tp_event", "perf_swevent", "__perf_", "bpf_get_stack",
                    "bpf_overflow_handler", "trace_kfree_skb", "__probestub_")


def trim_tracing(frames: list[str]) -> list[str]:
    """frames (innermost first) from the first one outside the tracing machinery."""
    k = 0
    while k < len(frames) and frames[k].startswith(TRACING_PREFIXES):
        k += 1
    return frames[k:]


_reasons: dict[int, str] | None = None


def reason_value(value: int) -> str:
    """A drop reason's name on the running kernel (an event type's `reason: drop_reason`)."""
    global _reasons
    if _reasons is None:
        _reasons = drop_reasons()
    return _reasons.get(value) or str(value)


def _register() -> None:
    from .convert import Conversion, register, text_parse
    register(Conversion("drop_reason", reason_value, None, text_parse, kind="str"))


_register()


class DropNames:
    """Reason numbers and stack addresses to text, for one kernel."""

    def __init__(self) -> None:
        self.reasons = drop_reasons()
        self.ksyms = kernel_symbols()

    def reason(self, value: int) -> str:
        return self.reasons.get(value) or str(value)

    def stack(self, addrs: Iterable[int]) -> list[str]:
        return trim_tracing(self.ksyms.stack(list(addrs)))

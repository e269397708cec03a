"""core/btfreduce.essential_name: libbpf's rule for the name a CO-RE type
is matched by (bpf_core_essential_name_len): everything before the last
X___Y flavour separator, X and Y not underscores."""

from __future__ import annotations

import pytest

from pytrace.core.btfreduce import essential_name


@pytest.mark.parametrize("name, essential", [
    ("sock", "sock"),
    ("cgroup___ids", "cgroup"),
    ("sock_cgroup_data___val", "sock_cgroup_data"),
    ("trace_event_raw_tcp_event_sk_skb___old", "trace_event_raw_tcp_event_sk_skb"),
    ("a___b___c", "a___b"),             # the last separator
    ("__sk_buff", "__sk_buff"),         # leading underscores are no separator
    ("foo____bar", "foo____bar"),       # four underscores: Y would be one
    ("foo___", "foo___"),               # nothing after it
    ("x___y", "x"),
])
def test_flavours_are_cut_as_libbpf_cuts_them(name, essential):
    assert essential_name(name) == essential

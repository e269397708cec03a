"""Helpers of `pytrace tunnelmon` (the tool itself is pytrace.tools.tunnelmon):

- simulate: a multi-host VXLAN overlay in network namespaces, and a bounded
  ICMP traffic generator with per-client rates;
- web: the live chord-diagram view served by pytrace itself.
"""

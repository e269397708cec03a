"""vnet: per-hop packet latency in virtualized networks (vNetTracer on a stock kernel).

    config   the TOML trace-point file: points, packet selector, sampling
    tracer   VnetTracer: one BPF object per point, all feeding one ring buffer;
             points added and removed while it runs; PacketRecord dataclasses
    store    where records go: SQLite (default) or InfluxDB 1.x
    skew     clock offsets between hosts, from packets seen both ways
    report   each packet's path, per-segment latency, the bottleneck
    plot     the per-segment distributions as SVG
    control  the unix-socket control channel (`pytrace vnet ctl`)
    demo     a two-host container overlay (netns, veth, bridge, VXLAN)

The command line is src/pytrace/tools/vnet.py (`pytrace vnet record|report|
demo|ctl`).
"""

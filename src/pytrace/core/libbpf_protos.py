"""The C prototypes of the libbpf calls pytrace makes: one table for both
bindings (core/libbpf through ctypes, core/barelibbpf through _ctypes alone
for the speculative load at start-up).

Each entry is name: (return kind, (argument kinds...)); a binding maps the
kinds to its own types (libbpf.KINDS, barelibbpf.KINDS): int, u32, u64, bool,
size, str (char *, bytes or None), ptr (void *), void (no value), print_fn
(the log callback), and X* for a pointer to libbpf's struct X (the bare
binding passes an address).  Plain data: importing it costs nothing, which
the start-up path needs.  tests/unit/test_libbpf_protos.py checks that both
bindings know every kind they bind.
"""

PROTOTYPES = {
    "libbpf_major_version": ("u32", ()),
    "libbpf_minor_version": ("u32", ()),
    "libbpf_version_string": ("str", ()),
    "libbpf_set_print": ("ptr", ("print_fn",)),
    "libbpf_strerror": ("int", ("int", "str", "size")),
    "bpf_object__open_file": ("ptr", ("str", "OpenOpts*")),
    "bpf_object__load": ("int", ("ptr",)),
    "bpf_object__close": ("void", ("ptr",)),
    "bpf_object__find_program_by_name": ("ptr", ("ptr", "str")),
    "bpf_object__find_map_by_name": ("ptr", ("ptr", "str")),
    "bpf_object__next_program": ("ptr", ("ptr", "ptr")),
    "bpf_object__next_map": ("ptr", ("ptr", "ptr")),
    "bpf_program__name": ("str", ("ptr",)),
    "bpf_program__section_name": ("str", ("ptr",)),
    "bpf_program__set_autoload": ("int", ("ptr", "bool")),
    "bpf_program__type": ("int", ("ptr",)),
    "bpf_program__autoload": ("bool", ("ptr",)),
    "bpf_program__fd": ("int", ("ptr",)),
    "bpf_program__attach": ("ptr", ("ptr",)),
    "bpf_program__attach_tracepoint_opts": ("ptr", ("ptr", "str", "str", "TracepointOpts*")),
    "bpf_program__attach_uprobe_opts": ("ptr", ("ptr", "int", "str", "size", "UprobeOpts*")),
    "bpf_program__attach_cgroup": ("ptr", ("ptr", "int")),
    "bpf_program__attach_xdp": ("ptr", ("ptr", "int")),
    "bpf_program__attach_iter": ("ptr", ("ptr", "ptr")),
    "bpf_iter_create": ("int", ("int",)),
    "bpf_prog_test_run_opts": ("int", ("int", "ptr")),    # P: a TestRunOpts, by address
    "bpf_link__destroy": ("int", ("ptr",)),
    "bpf_link__fd": ("int", ("ptr",)),
    "bpf_map__name": ("str", ("ptr",)),
    "bpf_map__fd": ("int", ("ptr",)),
    "bpf_map__type": ("int", ("ptr",)),
    "bpf_map__key_size": ("u32", ("ptr",)),
    "bpf_map__value_size": ("u32", ("ptr",)),
    "bpf_map__max_entries": ("u32", ("ptr",)),
    "bpf_map__set_max_entries": ("int", ("ptr", "u32")),
    "bpf_map__set_initial_value": ("int", ("ptr", "str", "size")),
    "bpf_map__map_flags": ("u32", ("ptr",)),
    "bpf_map__set_map_flags": ("int", ("ptr", "u32")),
    "bpf_map__initial_value": ("ptr", ("ptr", "size*")),
    "bpf_map__set_autocreate": ("int", ("ptr", "bool")),
    "bpf_map__reuse_fd": ("int", ("ptr", "int")),
    "bpf_map_lookup_elem": ("int", ("int", "ptr", "ptr")),
    "bpf_map_update_elem": ("int", ("int", "ptr", "ptr", "u64")),
    "bpf_map_delete_elem": ("int", ("int", "ptr")),
    "bpf_map_get_next_key": ("int", ("int", "ptr", "ptr")),
    "bpf_map_lookup_and_delete_elem": ("int", ("int", "ptr", "ptr")),
    "bpf_map_create": ("int", ("int", "str", "u32", "u32", "u32", "ptr")),
    "bpf_tc_hook_create": ("int", ("TcHook*",)),
    "bpf_tc_hook_destroy": ("int", ("TcHook*",)),
    "bpf_tc_attach": ("int", ("TcHook*", "TcOpts*")),
    "bpf_tc_detach": ("int", ("TcHook*", "TcOpts*")),
    "bpf_xdp_attach": ("int", ("int", "int", "u32", "ptr")),
    "bpf_xdp_detach": ("int", ("int", "u32", "ptr")),
    "btf__load_vmlinux_btf": ("ptr", ()),
    "btf__parse": ("ptr", ("str", "ptr")),
    "btf__parse_split": ("ptr", ("str", "ptr")),
    "btf__free": ("void", ("ptr",)),
    "btf__type_cnt": ("u32", ("ptr",)),
    "bpf_program__insns": ("ptr", ("ptr",)),
    "bpf_program__insn_cnt": ("size", ("ptr",)),
    "btf__find_by_name_kind": ("int", ("ptr", "str", "u32")),
    "btf__type_by_id": ("ptr", ("ptr", "u32")),
    "btf__name_by_offset": ("str", ("ptr", "u32")),
}

# struct bpf_object_open_opts as of libbpf 1.1 (sz lets newer libbpfs accept
# it): both bindings build it from this, the bare one to pass btf_custom_path
OPEN_OPTS = (("sz", "size"), ("object_name", "str"), ("relaxed_maps", "bool"), ("pin_root_path", "str"),
             ("_attach_prog_fd", "u32"), ("kconfig", "str"), ("btf_custom_path", "str"),
             ("kernel_log_buf", "str"), ("kernel_log_size", "size"), ("kernel_log_level", "u32"))

# what the speculative load calls before the CLI has imported anything (cli/prefetch)
BARE = ("libbpf_set_print", "bpf_object__open_file", "bpf_object__load", "bpf_object__close",
        "bpf_object__next_program", "bpf_object__next_map", "bpf_object__find_map_by_name",
        "bpf_program__name", "bpf_program__set_autoload", "bpf_program__type", "bpf_map__type",
        "bpf_map__map_flags", "bpf_map__set_map_flags", "bpf_map__set_max_entries", "bpf_map__set_initial_value")

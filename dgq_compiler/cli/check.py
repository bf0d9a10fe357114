"""`dgq check`: does a compiled graph fit a hardware target? Violations + worst-case accumulators."""
from __future__ import annotations

from dgq_compiler.cli import argtypes
from dgq_compiler.cli.graph_args import add_graph_and_target


def register(sub) -> None:
    p = sub.add_parser(
        "check", help="check a compiled graph against a hardware target",
        description="List every place the compiled graph asks for something the target does not offer (bit widths, "
                    "signed/unsigned grids, symmetric zero points, group scales, per-step scales and group maps, the "
                    "log quantizer, the floating-point <start> branch), with the node, what the graph asks and what "
                    "the target allows; and a worst-case accumulator-overflow analysis from bit widths and reduction "
                    "lengths. Exits 1 when there are violations.",
        formatter_class=argtypes.HelpFormatter)
    add_graph_and_target(p)
    p.add_argument("--latent-size", type=argtypes.latent_size, default=None,
                   help="latent height/width: the graph is run once at this size (batch 1) and attention reduction "
                        "lengths come from it; none: from compile.json/export.json or the model (not run)")
    p.add_argument("--batch", type=argtypes.batch, default=2, help="batch used for shape inference")
    p.add_argument("--all", action="store_true", help="list every violation, not only the first 40")
    p.set_defaults(run=run)


def run(args) -> int:
    from dgq_compiler.cli.graph_args import read_graph
    from dgq_compiler.cli.table import format_table
    from dgq_compiler.errors import DgqError
    from dgq_compiler.verify import latent_size_of
    from dgq_compiler.adapt import graphs_for_target
    from dgq_compiler.verify.latent_probe import probe_latent_size
    from simulator.check import Violation, check_graph, load_for_analysis

    graphs = graphs_for_target(args.graph, args.target, lambda p: read_graph(p, "compiled")[0])
    reports = []
    for graph in graphs:  # a compile for a constant-scale target: every static per-step graph
        model = load_for_analysis(graph)
        try:
            latent = latent_size_of(model, graph, args.latent_size)
        except DgqError:  # attention reduction lengths then stay unknown
            latent = None
        report = check_graph(model, args.target, latent_size=latent, batch=args.batch)
        if args.latent_size:  # a size the user asks about: run the graph there (shapes alone cannot tell)
            problem = probe_latent_size(graph, args.latent_size)
            if problem:
                report.violations.insert(0, Violation("graph", "latent size", problem, "a graph that runs at that size"))
        if not report.info.quantizers:
            raise DgqError(f"graph {str(graph)!r} has no quantizers: nothing to check")
        reports.append(report)
    report = next((r for r in reports if not r.ok), reports[0])
    graph = graphs[reports.index(report)]
    if len(graphs) > 1:
        print(format_table(["graph", "violations"], [[str(g), len(r.violations)] for g, r in zip(graphs, reports)],
                           title=f"{len(graphs)} static graphs (compiled for {args.target}); details of {graph.name}"))
        print()
    shown = report.violations if args.all else report.violations[:40]
    if report.violations:
        print(format_table(["node", "rule", "graph asks", "target allows"],
                           [[v.node, v.rule, v.asks, v.allows] for v in shown],
                           title=f"violations ({len(shown)} of {len(report.violations)})"))
        print()
    accs = sorted(report.accumulators, key=lambda a: -(a.worst_bits or 0))
    print(format_table(["node", "op", "K", "|a| bits", "|b| bits", "worst-case bits", "accumulator", "status"],
                       [[a.node, a.op_type + (" shift-add" if a.shift_add else ""), a.reduction or "unknown",
                         a.operand_bits[0], a.operand_bits[1], a.worst_bits or "unknown", a.available_bits,
                         "MAY OVERFLOW" if a.may_overflow else "ok"] for a in accs[:15]],
                       title=f"worst-case accumulators ({min(15, len(accs))} widest of {len(accs)})"))
    print()
    rows = [["graph", str(graph)], ["target", report.target],
            ["quantizers", len(report.info.quantizers)], ["integer weights", len(report.info.weights)],
            ["quantized matmuls/convs", len(report.info.matmuls)],
            ["may overflow", sum(a.may_overflow for a in report.accumulators)],
            *[[f"violations: {rule}", n] for rule, n in sorted(report.by_rule().items())],
            ["verdict", "conforms" if report.ok else f"{len(report.violations)} violations"]]
    print(format_table(["check", ""], rows))
    return 0 if report.ok else 1

"""The paper's claims against a results table: a verdict on each, and the numbers behind it.

1. Scaling any single dimension (width, depth or resolution) improves accuracy, but the gain
   saturates. Per line (one dimension scaled in one sweep, from its base point): the gain from
   its cheapest to its largest network, and the curvature of accuracy in log2(MACs): how much
   the gain per doubling changes per doubling (stats.curvature_per_doubling, fitted per seed;
   below 0: each doubling gains less). Also the saturating fit's ceiling and its extrapolated
   gain to 4x the largest network, with bootstrap intervals (resampling each point's seeds).
2. Compound scaling beats single-dimension scaling at equal FLOPs. Per budget (points that carry
   `target_macs`: configs/sweeps/equal_flops.py, reproduce.py): compound minus each dimension.
3. Compound coefficients found by grid search at phi = 1 transfer to larger phi. The grid's best
   candidate (configs/sweeps/abg_grid.py; without a grid, the best compound line at phi = 1) is
   compared with every other compound line of its sweep at each phi > 1, at equal MACs: at the
   same phi when the two networks' MACs agree within 5%, else against the other line interpolated
   in log MACs (per seed; never extrapolated).
4. Width scaling pays more on a deeper, higher-resolution network (the paper's Figure 4, which
   motivates balancing the three). Per sweep of width lines at several (depth, resolution)
   settings (configs/sweeps/width_at_depth_resolution.py): the line at the greatest depth and
   resolution minus the one at the least, at equal MACs wherever their MACs ranges overlap.

Accuracies are in percent points; differences are paired by seed (the same seed on both sides)
with a 95% t interval. A verdict is 'supported' when every interval that decides lies on the
claim's side of 0, 'not supported' when one lies on the other side, and 'undecided at this n'
otherwise, including when a comparison has a single seed: an interval needs n >= 2. Missing
points never fail the report: what they would decide is listed as missing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from effscale import record, results, stats, storage
from effscale.units import si

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
UNDECIDED = "undecided at this n"
DIMENSIONS = ("width", "depth", "resolution")
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)  # effscale.scaling's ALPHA, BETA, GAMMA (not imported: it pulls in the model)
EXTRAPOLATE = 4.0  # claim 1's extrapolated gain: to this multiple of a line's largest MACs
SAME_MACS = 0.05  # claim 3: two networks within 5% of each other's MACs are compared directly

Row = Mapping[str, Any]
Seeds = dict[Any, float]  # seed -> accuracy (percent)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim's verdict, how it was decided, and markdown lines with the numbers."""

    number: int
    title: str
    verdict: str
    criterion: str
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Network:
    """One network's runs: accuracy per seed, MACs, and its first row (labels)."""

    name: str
    macs: float
    seeds: Seeds
    row: Row


def combine(verdicts: Iterable[str]) -> str:
    """Not supported if any is; supported if all are (and there is one); else undecided."""
    vs = list(verdicts)
    if NOT_SUPPORTED in vs:
        return NOT_SUPPORTED
    return SUPPORTED if vs and all(v == SUPPORTED for v in vs) else UNDECIDED


def decide(summaries: Sequence[stats.Summary], signs: Sequence[int]) -> str:
    """Supported when every summary's interval lies on its expected side of 0 (`signs`: +1 above, -1 below),
    not supported when one lies on the other side, else undecided."""
    sides = [s.excludes_zero() * sign for s, sign in zip(summaries, signs, strict=True)]
    if not sides or any(side < 0 for side in sides):
        return NOT_SUPPORTED if sides else UNDECIDED
    return SUPPORTED if all(side > 0 for side in sides) else UNDECIDED


def header(*columns: str) -> list[str]:
    """A markdown table's first two lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def body(*parts: Sequence[str]) -> tuple[str, ...]:
    """Markdown paragraphs from groups of lines (a table is a group; a header alone is dropped), blank-separated."""
    groups = [list(p) for p in parts if p and not (p[0].startswith("|") and len(p) <= 2)]
    out: list[str] = []
    for g in groups:
        out += ([""] if out else []) + g
    return tuple(out)


def pp(summary: stats.Summary | None, unit: str = "") -> str:
    """'+0.52 [+0.10, +0.94] (n=3)', or '+0.52 (n=1: no interval)', or 'n/a'."""
    if summary is None or summary.mean is None:
        return "n/a"
    if summary.lo is None:
        return f"{summary.mean:+.2f}{unit} (n={summary.n}: no interval)"
    return f"{summary.mean:+.2f}{unit} [{summary.lo:+.2f}, {summary.hi:+.2f}] (n={summary.n})"


def networks(rows: Sequence[Row], key: str) -> list[Network]:
    """The finished networks among `rows` with their runs' accuracy (percent) by seed, in first-seen order."""
    out = []
    for (_, name), runs in results.by_network([r for r in rows if r.get("status") == "done"]).items():
        seeds: Seeds = {}
        for k, r in enumerate(runs):
            value = _num(r.get(key))
            if value is not None:
                seeds[r.get("seed") if r.get("seed") is not None else f"run{k}"] = 100.0 * value
        macs = _num(runs[0].get("macs"))
        if seeds and macs:
            out.append(Network(str(name), macs, seeds, runs[0]))
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def mean_by_seed(group: Sequence[Network]) -> Seeds:
    """Per seed, the mean accuracy of the networks in `group` that have it."""
    seeds = {s for n in group for s in n.seeds}
    return {s: float(np.mean([n.seeds[s] for n in group if s in n.seeds])) for s in seeds}


# ----------------------------------------------------------------------------- claim 1


def single_dimension_lines(rows: Sequence[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows of each (sweep, dimension) line: the dimension's own series plus the sweep's base point.

    Budget points (target_macs) join a line only in a sweep with a base point (reproduce.py);
    an equal-FLOPs sweep's budgets are claim 2's.
    """
    with_base = {r.get("sweep") for r in rows if r.get("strategy") == "base"}
    lines: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        s = r.get("strategy")
        if (
            s in DIMENSIONS
            and (r.get("series") or s) == s
            and (not _num(r.get("target_macs")) or r.get("sweep") in with_base)
        ):
            lines.setdefault((str(r.get("sweep")), str(s)), []).append(r)
    bases = [r for r in rows if r.get("strategy") == "base"]
    return {k: [b for b in bases if b.get("sweep") == k[0]] + v for k, v in lines.items()}


def saturation_line(nets: Sequence[Network]) -> tuple[str, list[str]]:
    """Claim 1 on one line (networks in MACs order): its verdict and table cells."""
    nets = sorted(nets, key=lambda n: n.macs)
    gain = stats.paired_difference(nets[-1].seeds, nets[0].seeds).summary
    per_seed = {s: [(n.macs, n.seeds[s]) for n in nets if s in n.seeds] for s in {s for n in nets for s in n.seeds}}
    curvatures = [stats.curvature_per_doubling(*zip(*pts, strict=True)) for pts in per_seed.values() if len(pts) >= 3]
    curvature = stats.summarize([c for c in curvatures if c is not None])
    verdict = decide([gain, curvature], [+1, -1]) if curvature.n else combine([decide([gain], [+1]), UNDECIDED])
    ceiling, further = fitted(nets)
    span = f"{si(nets[0].macs)} -> {si(nets[-1].macs)} ({nets[-1].macs / nets[0].macs:.1f}x)"
    return verdict, [span, str(len(nets)), pp(gain), pp(curvature), ceiling, further, verdict]


def fitted(nets: Sequence[Network]) -> tuple[str, str]:
    """The saturating fit's ceiling and its gain from the largest network to EXTRAPOLATE x its MACs, as text
    with bootstrap intervals. Only with 4 networks or more: three points fix the three parameters."""
    if len({n.macs for n in nets}) <= 3:
        return "n/a (needs 4 networks)", "n/a"
    x1, x4 = nets[-1].macs, EXTRAPOLATE * nets[-1].macs
    boot = stats.bootstrap_saturating({n.macs: list(n.seeds.values()) for n in nets}, at=(x1, x4), a_max=100.0)
    if boot is None:
        return "n/a", "n/a"
    estimate = float(boot.curve(x4) - boot.curve(x1))
    if not boot.intervals:
        return f"{boot.curve.a:.2f} (no interval)", f"{estimate:+.2f} (no interval)"
    lo, hi = boot.intervals["a"]
    flo, fhi = stats.percentile_interval(boot.draws[x4] - boot.draws[x1])
    return f"{boot.curve.a:.2f} [{lo:.2f}, {hi:.2f}]", f"{estimate:+.2f} [{flo:+.2f}, {fhi:+.2f}]"


def claim_saturation(rows: Sequence[Row], key: str) -> Claim:
    """Claim 1: every single-dimension line gains (interval above 0) with negative curvature (below 0)."""
    lines = header(
        "sweep", "dimension", "MACs", "networks", "gain, first to last", "curvature per doubling",
        "fitted ceiling", f"fitted gain to {EXTRAPOLATE:g}x", "verdict",
    )  # fmt: skip
    verdicts, seen = [], set()
    for (sweep, dim), group in single_dimension_lines(rows).items():
        nets = networks(group, key)
        if len(nets) < 2:
            lines.append(f"| {sweep} | {dim} | | {len(nets)} | too few finished networks | | | | {UNDECIDED} |")
            verdicts.append(UNDECIDED)
            continue
        verdict, cells = saturation_line(nets)
        verdicts.append(verdict)
        seen.add(dim)
        lines.append(f"| {sweep} | {dim} | " + " | ".join(cells) + " |")
    missing = [d for d in DIMENSIONS if d not in seen]
    verdict = combine(verdicts)
    if missing and verdict == SUPPORTED:
        verdict = UNDECIDED
    notes = (
        [f"No finished line scales {', '.join(missing)} (configs/sweeps/{missing[0]}.py, doublings=4)."]
        if missing
        else []
    )
    return Claim(
        1,
        "scaling any single dimension improves accuracy, but the gain saturates",
        verdict,
        "per line: the gain from the cheapest to the largest network above 0, and the curvature of accuracy "
        "in log2(MACs) below 0 (each doubling gains less than the one before), both by their 95% intervals "
        "over seeds; every dimension needs a line. The fitted ceiling and extrapolated gain (bootstrap "
        f"intervals, {stats.BOOTSTRAP_REPS} resamples of each point's seeds) are context, not criteria.",
        body(lines, notes),
    )


# ----------------------------------------------------------------------------- claim 2


def budgets(rows: Sequence[Row]) -> dict[tuple[str, float], list[Row]]:
    """Rows of each (sweep, target_macs) budget, strategies width / depth / resolution / compound."""
    out: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        target = _num(r.get("target_macs"))
        if target and r.get("strategy") in (*DIMENSIONS, "compound"):
            out.setdefault((str(r.get("sweep")), target), []).append(r)
    return out


def claim_equal_flops(rows: Sequence[Row], key: str) -> Claim:
    """Claim 2: at every budget, compound minus each single dimension is above 0."""
    lines = header("sweep", "budget", "compared", "compound minus it", "its MACs / budget", "compound's MACs / budget")
    verdicts, notes = [], []
    for (sweep, target), group in budgets(rows).items():
        by_strategy = {
            s: [n for n in networks(group, key) if n.row.get("strategy") == s] for s in (*DIMENSIONS, "compound")
        }
        compound = by_strategy.pop("compound")
        singles = {s: nets for s, nets in by_strategy.items() if nets}
        if not compound or not singles:
            notes.append(
                f"{sweep} at {si(target)} MACs: no finished {'compound' if not compound else 'single-dimension'} point."
            )
            verdicts.append(UNDECIDED)
            continue
        diffs = {
            s: stats.paired_difference(mean_by_seed(compound), mean_by_seed(nets)).summary
            for s, nets in singles.items()
        }
        verdicts.append(decide(list(diffs.values()), [+1] * len(diffs)))
        c_ratio = np.mean([n.macs for n in compound]) / target
        for s, d in diffs.items():
            ratio = np.mean([n.macs for n in singles[s]]) / target
            lines.append(f"| {sweep} | {si(target)} | {s} | {pp(d)} | {ratio:.3f} | {c_ratio:.3f} |")
    if not verdicts:
        notes.append("No finished points with target_macs: run configs/sweeps/equal_flops.py (or reproduce.py).")
    return Claim(
        2,
        "compound scaling beats single-dimension scaling at equal FLOPs",
        combine(verdicts),
        "at every budget, compound's top-1 minus each single dimension's (paired by seed) has its 95% interval "
        "above 0.",
        body(lines, notes),
    )


# ----------------------------------------------------------------------------- claim 3


def coefficients_of(row: Row) -> tuple[float, float, float] | None:
    """(alpha, beta, gamma) of a compound or abg row: its `coefficients` column, else its overrides
    (the paper's values where a compound point does not set them)."""
    text = row.get("coefficients")
    if isinstance(text, str) and text.count("/") == 2:
        try:
            return tuple(float(v) for v in text.split("/"))  # type: ignore[return-value]
        except ValueError:
            pass
    try:
        overrides = json.loads(row.get("overrides") or "{}")
    except (TypeError, json.JSONDecodeError):
        overrides = {}
    if not isinstance(overrides, dict) or row.get("strategy") not in ("compound", "abg"):
        return None
    keys = ("model.alpha", "model.beta", "model.gamma")
    return tuple(float(overrides.get(k, v)) for k, v in zip(keys, PAPER_COEFFICIENTS, strict=True))  # type: ignore[return-value]


def label(abg: tuple[float, float, float]) -> str:
    return "/".join(f"{v:g}" for v in abg)


def grid_winner(rows: Sequence[Row], key: str) -> tuple[tuple[float, float, float] | None, list[str], list[str]]:
    """The best alpha/beta/gamma candidate of the grid's finished points, lines describing the choice, and a table.

    The choice is made on validation top-1 (`results.selection_key`: of the EMA weights when `key`
    is, held out from the training split), so that the test split stays untouched by the search;
    records from before the validation split are ranked on `key`, and the text says so. Candidates
    that solved to the same network are one entry (their runs are the same model), named by all
    their coefficients. The table ranks every candidate: its validation and reported accuracy, and
    its paired difference to the pick.
    """
    grid_rows = [r for r in rows if r.get("strategy") == "abg"]
    chooser = results.selection_key(grid_rows, key)
    chosen, reported = _by_coefficients(grid_rows, chooser or key), _by_coefficients(grid_rows, key)
    if not chosen:
        return None, [], []
    chosen, aliases = merge_identical(chosen)
    order = sorted(chosen, key=lambda abg: -float(np.mean(list(mean_by_seed(chosen[abg]).values()))))
    best = order[0]
    where = "equal MACs" if any(_num(n.row.get("target_macs")) for n in chosen[best]) else "phi = 1"
    count = sum(1 + len(a) for a in aliases.values())
    many = f"{len(order)} networks of {count} candidates" if count > len(order) else f"{len(order)} candidates"
    text = f"The grid ({many} at {where}) picked {names(best, aliases)}"
    if len(order) > 1:
        lead = stats.paired_difference(mean_by_seed(chosen[best]), mean_by_seed(chosen[order[1]])).summary
        text += f", ahead of {names(order[1], aliases)} by {pp(lead)}"
    how = f"validation top-1 (`{chooser}`)" if chooser else f"`{key}` (these records have no validation split)"
    lines = [f"{text}, chosen on {how}."]
    lines += [f"{' and '.join(label(a) for a in (abg, *same))} solve to the same network "
              f"({si(chosen[abg][0].macs)} MACs): their runs are one candidate."
              for abg, same in aliases.items() if same]  # fmt: skip
    table = header("rank", "alpha/beta/gamma", "MACs", f"`{chooser or key}` (chooses)", "minus the pick", f"`{key}`")
    for rank, abg in enumerate(order, 1):
        seeds = mean_by_seed(chosen[abg])
        gap = "" if abg == best else pp(stats.paired_difference(seeds, mean_by_seed(chosen[best])).summary)
        mine = stats.summarize(list(mean_by_seed(reported.get(abg, [])).values()))
        macs = si(float(np.mean([n.macs for n in chosen[abg]])))
        table.append(f"| {rank} | {names(abg, aliases)} | {macs} | {level(stats.summarize(list(seeds.values())))} "
                     f"| {gap} | {level(mine)} |")  # fmt: skip
    return best, lines, table


Coefficients = tuple[float, float, float]


def merge_identical(
    by_abg: Mapping[Coefficients, list[Network]],
) -> tuple[dict[Coefficients, list[Network]], dict[Coefficients, list[Coefficients]]]:
    """Candidates whose networks are the same (`results.architecture`) as one: kept under the paper's
    coefficients where they are among them, else the first; with, for each kept one, the others."""
    kept: dict[Coefficients, list[Network]] = {}
    aliases: dict[Coefficients, list[Coefficients]] = {}
    for members in results.identical_groups(list(by_abg), lambda abg: by_abg[abg][0].row):
        first = min(members, key=lambda a: (a != PAPER_COEFFICIENTS, members.index(a)))
        kept[first] = by_abg[first]
        aliases[first] = [a for a in members if a != first]
    return kept, aliases


def names(abg: Coefficients, aliases: Mapping[Coefficients, Sequence[Coefficients]]) -> str:
    """'1.2/1.1/1.15 = 1.4/1.1/1.1': a candidate with the others that are the same network."""
    return " = ".join(label(a) for a in (abg, *aliases.get(abg, ())))


def _by_coefficients(rows: Sequence[Row], key: str) -> dict[tuple[float, float, float], list[Network]]:
    out: dict[tuple[float, float, float], list[Network]] = {}
    for n in networks(rows, key):
        abg = coefficients_of(n.row)
        if abg is not None:
            out.setdefault(abg, []).append(n)
    return out


def level(summary: stats.Summary) -> str:
    """'89.13 [88.90, 89.36] (n=3)', or '89.13 (n=1)', or 'n/a': an accuracy (not a difference)."""
    if summary.mean is None:
        return "n/a"
    if summary.lo is None:
        return f"{summary.mean:.2f} (n={summary.n})"
    return f"{summary.mean:.2f} [{summary.lo:.2f}, {summary.hi:.2f}] (n={summary.n})"


def compound_lines(rows: Sequence[Row], key: str) -> dict[tuple[str, tuple[float, float, float]], dict[float, Network]]:
    """Finished compound networks by (sweep, coefficients), then phi."""
    out: dict[tuple[str, tuple[float, float, float]], dict[float, Network]] = {}
    for n in networks([r for r in rows if r.get("strategy") == "compound"], key):
        abg, phi = coefficients_of(n.row), _num(n.row.get("phi"))
        if abg is not None and phi is not None:
            out.setdefault((str(n.row.get("sweep")), abg), {})[phi] = n
    return out


def at_macs(line: Mapping[float, Network], macs: float, phi: float) -> tuple[Seeds | None, str]:
    """The line's accuracy per seed at `macs`: its own point at `phi` when within SAME_MACS, else
    interpolated in log MACs between its points (per seed); None outside its range."""
    same = line.get(phi)
    if same is not None and abs(same.macs / macs - 1) <= SAME_MACS:
        return dict(same.seeds), f"phi {phi:g}"
    out = interpolate(line.values(), macs)
    return (None, "outside its MACs range") if out is None else (out, "interpolated")


def interpolate(line: Iterable[Network], macs: float) -> Seeds | None:
    """A line's accuracy per seed at `macs`, linear in log MACs between its networks (a network's own
    value at its MACs); None outside the line's MACs range: never extrapolated."""
    nets = sorted(line, key=lambda n: n.macs)
    if not nets or not nets[0].macs <= macs <= nets[-1].macs:
        return None
    out = {}
    for s in {s for n in nets for s in n.seeds}:
        pts = [(math.log(n.macs), n.seeds[s]) for n in nets if s in n.seeds]
        if pts and pts[0][0] <= math.log(macs) <= pts[-1][0]:
            out[s] = float(np.interp(math.log(macs), *zip(*pts, strict=True)))
    return out


def claim_transfer(rows: Sequence[Row], key: str) -> Claim:
    """Claim 3: the grid's pick stays ahead of every other compound line at each phi > 1 (equal MACs)."""
    best, notes, ranking = grid_winner(rows, key)
    lines_by = compound_lines(rows, key)
    if best is None:  # no grid: the best compound line at phi = 1 stands in for its choice
        at1 = {k: line[1.0] for k, line in lines_by.items() if 1.0 in line}
        if at1:
            best = max(at1, key=lambda k: float(np.mean(list(at1[k].seeds.values()))))[1]
            notes.append(f"No finished grid points: {label(best)} is the best compound line at phi = 1.")
    table = header("sweep", "phi", "MACs", "compared with", "how", "grid's pick minus it")
    verdicts = []
    for (sweep, abg), line in lines_by.items():
        if abg != best:
            continue
        others = {k: v for k, v in lines_by.items() if k[0] == sweep and k[1] != best}
        for phi, net in sorted((phi, net) for phi, net in line.items() if phi >= 1):  # phi 0 is B0 on both
            for (_, other_abg), other in others.items():
                theirs, how = at_macs(other, net.macs, phi)
                if theirs is None:
                    table.append(f"| {sweep} | {phi:g} | {si(net.macs)} | {label(other_abg)} | {how} | n/a |")
                    continue
                d = stats.paired_difference(net.seeds, theirs).summary
                if phi > 1:
                    verdicts.append(decide([d], [+1]))
                tag = " (where it was chosen)" if phi == 1 else ""
                table.append(f"| {sweep} | {phi:g}{tag} | {si(net.macs)} | {label(other_abg)} | {how} | {pp(d)} |")
    if best is None:
        have = "no compound line reaches phi = 1" if lines_by else "no finished compound points"
        notes.append(f"No finished grid points and {have}: run configs/sweeps/abg_grid.py, then compound.py.")
    elif not any(k[1] == best for k in lines_by):
        notes.append(
            f"No compound line with {label(best)}: run configs/sweeps/compound.py:coefficients={label(best)} "
            "next to one with the paper's coefficients (configs/sweeps/compound.py), in the same folder."
        )
    elif not verdicts:
        notes.append("No comparison at phi > 1: another compound line of the same sweep is needed, at matching MACs.")
    return Claim(
        3,
        "compound coefficients found by grid search at phi = 1 transfer to larger phi",
        combine(verdicts),
        "at every phi > 1, the grid's pick minus every other compound line of its sweep, at equal MACs "
        "(paired by seed), has its 95% interval above 0.",
        body(notes, ranking, table),
    )


# ----------------------------------------------------------------------------- claim 4: Figure 4

Setting = tuple[float, float]  # (depth multiplier, resolution) a Figure 4 line scales width at


def width_lines(rows: Sequence[Row], key: str) -> dict[str, dict[Setting, list[Network]]]:
    """Figure 4's lines by sweep, then (depth, resolution): width points whose series names their setting
    (configs/sweeps/width_at_depth_resolution.py) rather than the width line of claim 1."""
    rows = [r for r in rows if r.get("strategy") == "width" and r.get("series") not in (None, "", "width")]
    out: dict[str, dict[Setting, list[Network]]] = {}
    for n in networks(rows, key):
        depth, resolution = _num(n.row.get("depth")), _num(n.row.get("resolution"))
        if depth is not None and resolution is not None:
            out.setdefault(str(n.row.get("sweep")), {}).setdefault((depth, resolution), []).append(n)
    return out


def corner(settings: Iterable[Setting], sign: int) -> Setting | None:
    """The setting at or below (sign -1) / above (+1) every other in both depth and resolution, if one is."""
    settings = list(settings)
    for s in settings:
        if all(sign * (s[0] - o[0]) >= 0 and sign * (s[1] - o[1]) >= 0 for o in settings):
            return s
    return None


def versus(line: list[Network], base: list[Network], names: tuple[str, str]) -> list[tuple[float, str, stats.Summary]]:
    """`line` minus `base` at every network of either that lies in both lines' MACs range (interpolated in
    log MACs, paired by seed; `interpolate` is None outside a line's range): (MACs, whose network, the
    difference)."""
    out = []
    for macs in sorted({n.macs for n in (*line, *base)}):
        mine, theirs = interpolate(line, macs), interpolate(base, macs)
        if mine is None or theirs is None:
            continue
        pair = zip(names, (line, base), strict=True)
        whose = " and ".join(name for name, nets in pair if any(n.macs == macs for n in nets))
        out.append((macs, whose, stats.paired_difference(mine, theirs).summary))
    return out


def claim_balance(rows: Sequence[Row], key: str) -> Claim:
    """Claim 4 (Figure 4): the width line at the greatest depth and resolution beats the one at the least,
    at every MACs they share."""
    levels = header("sweep", "line", "width", "MACs", f"`{key}`")
    table = header("sweep", "line", "minus", "MACs", "at a network of", "difference")
    verdicts, notes = [], []
    for sweep, lines in width_lines(rows, key).items():
        name = {s: str(nets[0].row.get("series")) for s, nets in lines.items()}
        for s in sorted(lines):
            for n in sorted(lines[s], key=lambda n: n.macs):
                summary, width = stats.summarize(list(n.seeds.values())), _num(n.row.get("width"))
                cells = (sweep, name[s], "" if width is None else f"{width:g}", si(n.macs), level(summary))
                levels.append("| " + " | ".join(cells) + " |")
        base, top = corner(lines, -1), corner(lines, +1)
        if base is None or top is None or base == top:
            notes.append(f"{sweep}: no line lies below (or above) every other in both depth and resolution.")
            continue
        for s in sorted(set(lines) - {base}):
            diffs = versus(lines[s], lines[base], (name[s], name[base]))
            if s == top:
                verdicts += [decide([d], [+1]) for _, _, d in diffs] or [UNDECIDED]
            for macs, whose, d in diffs:
                table.append(f"| {sweep} | {name[s]} | {name[base]} | {si(macs)} | {whose} | {pp(d)} |")
            if not diffs:
                table.append(f"| {sweep} | {name[s]} | {name[base]} | | no MACs in common | n/a |")
    if not verdicts and not notes:
        notes.append("No finished Figure 4 lines: run configs/sweeps/width_at_depth_resolution.py.")
    return Claim(
        4,
        "at equal FLOPs, scaling width on a deeper, higher-resolution network beats scaling width alone (Figure 4)",
        combine(verdicts) if verdicts else UNDECIDED,
        "the width line at the greatest depth and resolution minus the one at the least, at every network of "
        "either that lies in both lines' MACs range (the other line interpolated in log MACs, paired by seed), "
        "has its 95% interval above 0. The other lines are shown against the least too, as context.",
        body(notes, table, levels),
    )


# ----------------------------------------------------------------------------- the report


def evaluate(rows: Sequence[Row]) -> list[Claim]:
    """The claims on the finished rows of `rows` (any other rows are ignored)."""
    key = results.accuracy_key(rows)
    claims = (claim_saturation, claim_equal_flops, claim_transfer, claim_balance)
    return [claim(rows, key) for claim in claims]


def render(claims: Sequence[Claim], rows: Sequence[Row], title: str = "") -> str:
    """The report as markdown."""
    key = results.accuracy_key(rows)
    groups = results.by_network([r for r in rows if r.get("status") == "done"])
    counts = [len(g) for g in groups.values()]
    out = [f"# The paper's claims{': ' + title if title else ''}", ""]
    out.append(
        f"Metric: `{key}` ({'EMA' if key.startswith('ema') else 'final'} weights, top-1 on the test split) in percent "
        f"points. {sum(counts)} finished runs of {len(counts)} networks; runs per network: "
        + (f"{min(counts)} to {max(counts)}." if counts else "none.")
    )
    out += ["", "Differences are paired by seed, with 95% t intervals over the seeds.", ""]
    if not counts or max(counts) < 2:
        out += [
            "**Every network has a single run: intervals need n >= 2 seeds, so no verdict can be more than "
            "undecided.** Rerun the sweeps with `seeds=3` (configs/sweeps/base.py); seed 0 keeps its runs.",
            "",
        ]
    for c in claims:
        out += [
            f"## Claim {c.number}: {c.title}",
            "",
            f"**Verdict: {c.verdict}.**",
            "",
            f"Criterion: {c.criterion}",
            "",
        ]
        out += [*c.lines, ""] if c.lines else ["No finished points bear on it.", ""]
    return "\n".join(out)


def write(rows: Sequence[Row], path: str | os.PathLike[str], title: str = "") -> tuple[epath.Path, list[Claim]]:
    """Evaluates the claims on `rows` and writes the report to `path` atomically."""
    claims = evaluate(rows)
    record.write_text(path, render(claims, rows, title))
    return storage.path(path), claims

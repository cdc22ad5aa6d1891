"""The benchmark's figures: medians over rounds, and the side-by-side and compile-time tables."""

from __future__ import annotations

import statistics
from typing import Any

GB = 1e9


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of one job's measurements."""
    ok = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"name": name, "rounds_ok": len(ok), "rounds": len(results)}
    if not ok:
        out["error"] = results[-1].get("error") if results else "not run"
        return out
    for phase in ("train", "infer"):
        per_round = [r[phase]["images_per_s"] for r in ok if phase in r]
        out[f"{phase}_images_per_s"] = _median(per_round)
        out[f"{phase}_rounds_images_per_s"] = per_round
    out["compile_s"] = _median([r.get("train_compile_s", r.get("train_first_step_s")) for r in ok])
    out["peak_rss_train_bytes"] = _median([r.get("peak_rss_after_train_bytes") for r in ok])
    out["peak_rss_bytes"] = _median([r.get("peak_rss_bytes") for r in ok])
    mem = ok[0].get("train_memory")
    if mem:
        out["xla_train_temp_bytes"] = mem["temp"]
        out["xla_train_total_bytes"] = mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
    out["details"] = {k: v for k, v in ok[0].items() if k not in ("train", "infer", "train_memory", "infer_memory")}
    return out


def fmt(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def table(rows: list[dict[str, Any]], resolution: int, batch: int) -> str:
    """The side-by-side table: images/s, ratios effscale / framework, compile time and memory."""
    ref = next((r for r in rows if r["name"] == "effscale" and "error" not in r), None)
    head = (
        f"{'':24} {'train img/s':>11} {'infer img/s':>11} {'effscale/x train':>16} {'effscale/x infer':>16} "
        f"{'compile s':>9} {'peak RSS train GB':>17} {'XLA temp GB':>11}"
    )
    lines = [
        f"{resolution} px, batch {batch} (effscale/x: effscale's images/s over x's; above 1 effscale is faster)",
        head,
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:24} error: {r['error']}")
            continue
        ratio = {}
        for phase in ("train", "infer"):
            mine, theirs = (ref or {}).get(f"{phase}_images_per_s"), r.get(f"{phase}_images_per_s")
            ratio[phase] = mine / theirs if mine and theirs else None
        rss = r.get("peak_rss_train_bytes")
        temp = r.get("xla_train_temp_bytes")
        lines.append(
            f"{r['name']:24} {fmt(r.get('train_images_per_s')):>11} {fmt(r.get('infer_images_per_s')):>11} "
            f"{fmt(ratio['train'], '.2f'):>16} {fmt(ratio['infer'], '.2f'):>16} {fmt(r.get('compile_s')):>9} "
            f"{fmt(rss / GB if rss else None, '.2f'):>17} {fmt(temp / GB if temp else None, '.2f'):>11}"
        )
    return "\n".join(lines)


def compile_table(results: list[dict[str, Any]]) -> str:
    """Per preset: resolution, train / inference compile seconds and XLA's memory figures."""
    lines = [
        f"{'preset':8} {'px':>5} {'batch':>5} {'train compile s':>15} {'infer compile s':>15} "
        f"{'XLA train temp GB':>17} {'peak RSS GB':>11}"
    ]
    for r in results:
        if "error" in r:
            lines.append(f"{r['name']:8} error: {r['error']}")
            continue
        mem = r.get("train_memory") or {}
        lines.append(
            f"{r['name']:8} {r['resolution']:>5} {r['batch']:>5} {fmt(r.get('train_compile_s')):>15} "
            f"{fmt(r.get('infer_compile_s')):>15} {fmt(mem.get('temp', 0) / GB, '.2f'):>17} "
            f"{fmt(r.get('peak_rss_bytes', 0) / GB, '.2f'):>11}"
        )
    return "\n".join(lines)

"""Terminal tables and a PNG bar chart of the demo results (the paper's two tables in miniature)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["bar_chart", "format_tables"]

DECODING_LABELS = {"greedy": "greedy", "contrastive_empty": "contrastive (empty answer)",
                   "contrastive_wrong": "contrastive (wrong answer)"}


def format_tables(results: dict[str, Any]) -> str:
    lines = ["Teacher decoding (oracle-judged factual rationales on the training questions)",
             f"{'decoding':<30}{'supports gold':>15}{'vacuous':>10}{'CF supports A':>15}"]
    for name, m in results["decoding"].items():
        lines.append(f"{DECODING_LABELS[name]:<30}{m['supports_gold']:>15.1%}{m['vacuous']:>10.1%}"
                     f"{m['counterfactual_supports']:>15.1%}")
    lines += ["", "Students (test split; anti-shortcut split where the question's adjective misleads)",
              f"{'rationales / training':<34}{'acc':>7}{'acc anti':>10}{'CF cons.':>10}{'acc pert.':>10}"
              f"{'LAS [95% CI]':>24}"]
    for key, m in results["students"].items():
        source, alpha = key.split("/alpha=")
        label = f"{source.replace('contrastive_wrong', 'contrastive')}, " + (
            "factual only (a=0)" if float(alpha) == 0 else f"counterfactual (a={alpha})")
        ci = f"{m['las']:+.3f} [{m['las_ci_low']:+.2f},{m['las_ci_high']:+.2f}]"
        lines.append(f"{label:<34}{m['accuracy']:>7.1%}{m['accuracy_anti_shortcut']:>10.1%}"
                     f"{m['counterfactual_consistency']:>10.1%}{m['accuracy_perturbed_rationale']:>10.1%}{ci:>24}")
    return "\n".join(lines)


def bar_chart(results: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(results["decoding"])
    x = range(len(names))
    for offset, (metric, label) in zip((-0.2, 0.2), (("supports_gold", "supports gold answer"),
                                                     ("vacuous", "vacuous"))):
        ax1.bar([i + offset for i in x], [results["decoding"][n][metric] for n in names], width=0.4, label=label)
    ax1.set_xticks(list(x), [DECODING_LABELS[n].replace(" (", "\n(") for n in names])
    ax1.set_ylim(0, 1)
    ax1.set_title("Teacher rationales")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    students = list(results["students"])
    metrics = [("accuracy", "accuracy"), ("accuracy_anti_shortcut", "acc. anti-shortcut"),
               ("counterfactual_consistency", "CF consistency"), ("las", "LAS")]
    width = 0.8 / len(metrics)
    for k, (metric, label) in enumerate(metrics):
        ax2.bar([i + (k - 1.5) * width for i in range(len(students))],
                [results["students"][s][metric] for s in students], width=width, label=label)
    ax2.set_xticks(range(len(students)), [s.replace("contrastive_wrong", "contrastive").replace("/", "\n")
                                          for s in students])
    ax2.set_ylim(min(0, *[results["students"][s]["las"] for s in students]) - 0.05, 1)
    ax2.axhline(0, color="black", linewidth=0.5)
    ax2.set_title("Students")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4)
    fig.suptitle(f"SCOTT on a synthetic world (seed {results['settings']['seed']}"
                 f"{', quick' if results['settings']['quick'] else ''})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

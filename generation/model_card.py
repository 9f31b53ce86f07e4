"""Model cards: what a model was trained on, how long, and how it ended (JSON + Markdown)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conditioning.dataset import write_json_atomic, write_text_atomic


def write_model_card(run_dir: str | Path, card: dict[str, Any]) -> None:
    run = Path(run_dir)
    write_json_atomic(run / "model_card.json", card)
    lines = [f"# Model card: {card.get('kind', 'model')}", ""]
    ordered = sorted(card.items(), key=lambda item: isinstance(item[1], dict))
    for key, value in ordered:
        if isinstance(value, dict):
            lines.append(f"## {key}")
            lines.append("")
            lines.extend(f"- **{k}**: {_fmt(v)}" for k, v in value.items())
            lines.append("")
        else:
            lines.append(f"- **{key}**: {_fmt(value)}")
            if key == ordered[-1][0] or isinstance(
                ordered[ordered.index((key, value)) + 1][1], dict
            ):
                lines.append("")
    lines.append("")
    text = "\n".join(lines)
    write_text_atomic(run / "model_card.md", text)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)

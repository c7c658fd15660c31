"""Chat formats of checkpoints: whether a checkpoint declares a chat template, and which
format (recognised from a marker token of its vocabulary) a one-turn prompt then takes.

Only formats whose marker is in the vocabulary AND whose checkpoint declares a template are
used: base models such as Gemma 3 270M have the markers in their vocabulary but no
template, so their prompts stay plain text.
"""

from __future__ import annotations

import json
from pathlib import Path

# Marker token -> the text of one user turn up to where the assistant's answer begins;
# {} is the user's message.
CHAT_FORMATS = {
    "<|im_start|>": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",  # ChatML
    "<start_of_turn>": "<start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",  # Gemma
    "<|start_header_id|>": (  # Llama 3
        "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}


def declares_chat_template(path: str | Path) -> bool:
    """Whether a checkpoint says it is a chat model: tokenizer.chat_template in a GGUF's
    metadata, or a chat template beside a Hugging Face directory's tokenizer."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".gguf":
            return False
        import gguf

        return "tokenizer.chat_template" in gguf.GGUFReader(path).fields
    if (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return True
    config = path / "tokenizer_config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("chat_template"))


def chat_format(tokenizer, declared: bool) -> str | None:
    """The one-turn chat format ({} for the message) of a checkpoint that declares a chat
    template, from the first `CHAT_FORMATS` marker in its tokenizer's vocabulary; None
    without a tokenizer, without a declared template, or for an unknown format."""
    if tokenizer is None or not declared:
        return None
    for marker, template in CHAT_FORMATS.items():
        if tokenizer.token_to_id(marker) is not None:
            return template
    return None

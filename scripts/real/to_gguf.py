"""Converts the tiny test model (build_model.py's) to GGUF with the converter vendored in llama.cpp's sources.

Usage: python to_gguf.py LLAMA_CPP_SOURCES MODEL_DIR OUT.gguf, under a Python that has torch, transformers
and numpy (vLLM's venv). The converter names a BPE tokenizer's pre-tokenizer by hashing how it splits a
sample text, and knows only published models' hashes; the test model's tokenizer is byte-level BPE, whose
pre-tokenizer is GPT-2's, so this tells the converter that and runs it as it is otherwise.
"""

import runpy
import sys
from pathlib import Path
from typing import Any


def main(sources: Path, model: Path, out: Path) -> None:
    """Registers the test model's converter over the stock Llama one, then runs convert_hf_to_gguf.py."""
    sys.path[:0] = [str(sources), str(sources / "gguf-py")]
    from conversion.base import ModelBase  # type: ignore[import-not-found]
    from conversion.llama import LlamaModel  # type: ignore[import-not-found]

    @ModelBase.register("LlamaForCausalLM")
    class TestModel(LlamaModel):  # type: ignore[misc]
        """The Llama converter, told that the test model's tokenizer splits text as GPT-2's does."""

        model_arch = LlamaModel.model_arch

        def get_vocab_base_pre(self, tokenizer: Any) -> str:
            """Answers GPT-2's pre-tokenizer, the one build_model.py's ByteLevel tokenizer uses."""
            return "gpt-2"

    script = sources / "convert_hf_to_gguf.py"
    sys.argv = [str(script), str(model), "--outfile", str(out), "--outtype", "f32"]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(*(Path(arg) for arg in sys.argv[1:4]))

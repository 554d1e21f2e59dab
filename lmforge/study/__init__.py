"""Studies: several runs planned together to answer one question (`lmforge.study.domain`:
domain only, general only, mixed, or continued, at equal compute)."""

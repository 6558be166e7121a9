"""actspace: a gated research plan on language-model activations, as a Snakemake workflow."""

__version__ = "0.1.0"

"""Party data: loading and validation, binning, and the synthetic SME generator."""

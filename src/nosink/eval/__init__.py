"""Evaluation and analysis (extra ``nosink[eval]``): the paper's protocols, sweeps, sink diagnostics."""

"""Across units: selectivity, label sparsity, t-SNE and clustering (`units`), Hoyer sparsity (`sparsity`)."""

"""Across units: selectivity over part and motion metrics, label sparsity, t-SNE and clustering (`units`),
Hoyer sparsity (`sparsity`)."""

"""Reports: figures, plots and the self-contained HTML report."""

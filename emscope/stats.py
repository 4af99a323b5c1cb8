"""Statistics shared by every stage: AUROC, bootstrap intervals, the logistic probe."""

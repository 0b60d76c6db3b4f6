"""The recipe's claims measured at small scale: continued-pretraining ablations from one phase-1 checkpoint
(annotator-selected vs random data, k repeats of a small selection vs one pass over a k-times larger one), their
measures, and a markdown report with plots. See docs/recipe.md. Importing this package loads nothing heavy."""

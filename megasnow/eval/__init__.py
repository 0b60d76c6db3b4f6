"""Evaluation: benchmark tasks (HumanEval, EvalPlus and MBPP schemas), sandboxed execution, pass@k, the loss on
benchmark solutions, and code generation through megasnow.generation backends. See docs/evaluation.md.

Importing this package imports no torch; the modules are imported by their users.
"""

"""The one prepared GPU run (benchmarks/gpu_suite.sh): its plan, runner, device checks and summary."""

"""Pipeline parallelism: stage-to-stage point-to-point transfers and forward/backward schedules."""

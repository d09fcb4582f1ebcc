"""What trains and measures: benchmarks, the memory estimate, the downstream task,
evaluation sources, the demo and the paper tables. Built on training, sampling and
evaluation; nothing below this package imports it."""

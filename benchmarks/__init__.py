"""tfddim benchmarks (``make bench``): each module measures one thing side by side and writes JSON to ``results/``."""

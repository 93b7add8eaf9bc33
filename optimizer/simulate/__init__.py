"""The simulator behind `thrifty simulate`: the optimizer against fixed fleets and an oracle, on simulated pools.

Each pool's instances run a discrete-event model of continuous batching (`engine`) at true
efficiencies the optimizer never sees (`truth`); a seeded workload (`workloads`) is routed by a
simulated gateway (`routing`) over a fleet that starts, drains and bills its instances (`fleet`).
Every policy (`thrifty`, `baselines`, `oracle`) serves the same arrivals (`simulation`), and the
results are compared in a table, JSON and plots (`metrics`, `report`, `plots`, `cli`).
"""

__all__: list[str] = []

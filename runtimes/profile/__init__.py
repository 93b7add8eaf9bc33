"""Profiling: what a pool serves within its SLO, and what the hardware under it can do.

One job per module; the hardware half (`microbench`, `hardware`, `jax_bench`, `roofline`,
`gpu_check`) needs only the standard library and torch or JAX, so it runs on a bare accelerator
host. The load half needs the project's dependencies (aiohttp, msgspec, rich, matplotlib).

- `profile_file`: the profile format (`Profile`), `save_profile`, `load_profile`, `validate`, `accepts`
- `metrics`: one load level's serving metrics with vLLM's benchmark definitions and names
- `capacity`: the SLO-feasible capacity per instance and tokens per dollar
- `stream`: timed streaming requests, closed and open loops
- `sweep`: prompts of a given length, a sweep of load levels, a whole profile of a URL
- `instance`: one instance of a configured pool on this host, for as long as a profile takes
- `plots`: PNG curves of a profile
- `microbench`, `hardware`, `jax_bench`: achieved bandwidth and matmul throughput (torch, JAX)
- `roofline`: model sizes from a checkpoint and the decode roofline
- `cli`: `thrifty profile` and `thrifty profile hardware`; `gpu_check`: the accelerator check
"""

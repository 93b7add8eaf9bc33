"""How each engine is launched and reached."""

from runtimes.engines.vllm import LaunchSpec, build_vllm_launch

__all__ = ["LaunchSpec", "build_vllm_launch"]

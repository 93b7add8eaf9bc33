"""Model runtimes: engines, providers that start and stop instances, the accelerator catalog."""

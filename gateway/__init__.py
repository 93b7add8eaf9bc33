"""The HTTP front end: OpenAI API, routing, proxying, and the `thrifty` command."""

"""hybrid-router: per-request routing of LLM inference across hosted APIs, GPU and edge."""

__version__ = "0.1.0"

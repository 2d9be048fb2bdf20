"""Plain-Python domain logic for serving openai/gpt-oss-120b on TensorRT-LLM.

Nothing here imports Pulumi: the runtime configuration, capacity arithmetic, the API-key gateway
configuration and the benchmark are importable and testable on their own.
"""

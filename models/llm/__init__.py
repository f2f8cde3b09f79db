"""Prompting, the offline responder and the OpenAI-compatible client used by the LLM router."""

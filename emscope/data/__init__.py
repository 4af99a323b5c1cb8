"""Inputs: transcripts (OpenAI messages JSONL), chat rendering with assistant-response masks, question sets."""

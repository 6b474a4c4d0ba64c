"""The MiniMind-V model: LLM (llm.py), vision encoder (vision.py), projector (projector.py), the
combined VLM with image splicing (vlm.py) and KV-cache generation (generate.py)."""
